// A kernel that reads its launch from the dispatch packet and keeps a value in private (scratch) memory, as code
// built with __builtin_amdgcn_dispatch_ptr() and a private array would, for gfx1100 (code object v5), by hand:
//   kernel void dispatch_scratch(global ulong *out, ulong bias)
//   { private uint t[4]; uint i = group_id_x * packet->workgroup_size_x + local_id_x;
//     t[2] = i + private_segment_size; out[i] = (ulong)(t[2] + packet->grid_size_x) + bias; }
// User SGPRs in AMDGPUUsage order: dispatch ptr s[0:1], kernarg ptr s[2:3], private segment size s4; padded to 15
// for gfx1100 wave32 (FeatureUserSGPRInit16Bug), so workgroup id x is s15.
	.amdgcn_target "amdgcn-amd-amdhsa--gfx1100"
	.amdhsa_code_object_version 5
	.text
	.globl	dispatch_scratch
	.p2align	8
	.type	dispatch_scratch,@function
dispatch_scratch:
	s_load_b32 s6, s[0:1], 0x4             // hsa_kernel_dispatch_packet_t.workgroup_size_x (and _y above it)
	s_load_b32 s7, s[0:1], 0xc             // .grid_size_x, in work-items
	s_load_b128 s[8:11], s[2:3], 0x0       // out, bias
	v_and_b32 v0, 0x3ff, v0
	s_waitcnt lgkmcnt(0)
	s_and_b32 s6, s6, 0xffff
	s_mul_i32 s6, s6, s15
	v_add_nc_u32 v1, s6, v0                // i
	v_add_nc_u32 v2, s4, v1                // i + private segment size
	scratch_store_b32 off, v2, off offset:8
	s_waitcnt_vscnt null, 0x0
	scratch_load_b32 v4, off, off offset:8
	s_waitcnt vmcnt(0)
	v_add_nc_u32 v4, s7, v4
	v_add_co_u32 v5, vcc_lo, s10, v4
	v_add_co_ci_u32_e64 v6, null, s11, 0, vcc_lo
	v_lshlrev_b32 v7, 3, v1
	global_store_b64 v7, v[5:6], s[8:9]
	s_endpgm
.Ldispatch_scratch_end:
	.size	dispatch_scratch, .Ldispatch_scratch_end-dispatch_scratch

	.rodata
	.p2align	6
	.amdhsa_kernel dispatch_scratch
		.amdhsa_group_segment_fixed_size 0
		.amdhsa_private_segment_fixed_size 16
		.amdhsa_kernarg_size 16
		.amdhsa_user_sgpr_count 15
		.amdhsa_user_sgpr_dispatch_ptr 1
		.amdhsa_user_sgpr_queue_ptr 0
		.amdhsa_user_sgpr_kernarg_segment_ptr 1
		.amdhsa_user_sgpr_dispatch_id 0
		.amdhsa_user_sgpr_private_segment_size 1
		.amdhsa_wavefront_size32 1
		.amdhsa_uses_dynamic_stack 0
		.amdhsa_enable_private_segment 1
		.amdhsa_system_sgpr_workgroup_id_x 1
		.amdhsa_system_sgpr_workgroup_id_y 0
		.amdhsa_system_sgpr_workgroup_id_z 0
		.amdhsa_system_sgpr_workgroup_info 0
		.amdhsa_system_vgpr_workitem_id 0
		.amdhsa_next_free_vgpr 8
		.amdhsa_next_free_sgpr 16
		.amdhsa_reserve_vcc 1
		.amdhsa_float_denorm_mode_32 3
		.amdhsa_float_denorm_mode_16_64 3
		.amdhsa_dx10_clamp 1
		.amdhsa_ieee_mode 1
		.amdhsa_workgroup_processor_mode 1
		.amdhsa_memory_ordered 1
		.amdhsa_forward_progress 1
	.end_amdhsa_kernel

	.amdgpu_metadata
---
amdhsa.kernels:
  - .args:
      - .address_space:  global
        .name:           out
        .offset:         0
        .size:           8
        .value_kind:     global_buffer
      - .name:           bias
        .offset:         8
        .size:           8
        .value_kind:     by_value
    .group_segment_fixed_size: 0
    .kernarg_segment_align: 8
    .kernarg_segment_size: 16
    .max_flat_workgroup_size: 64
    .name:           dispatch_scratch
    .private_segment_fixed_size: 16
    .reqd_workgroup_size:
      - 32
      - 1
      - 1
    .sgpr_count:     18
    .sgpr_spill_count: 0
    .symbol:         dispatch_scratch.kd
    .uses_dynamic_stack: false
    .vgpr_count:     8
    .vgpr_spill_count: 0
    .wavefront_size: 32
    .workgroup_processor_mode: 1
amdhsa.target:   amdgcn-amd-amdhsa--gfx1100
amdhsa.version:
  - 1
  - 2
...

	.end_amdgpu_metadata
