// An OpenCL-style kernel as clang would emit it for gfx1100 (code object v5), written by hand:
//   kernel void scale_add(global float *out, global const float *in, int count)
//   { int i = get_global_id(0); if (i < count) out[i] = in[i] * 2.0f + 1.0f; }
// (An argument named "n" would read as a YAML boolean, which the metadata verifier refuses.)
// get_global_id(0) = workgroup_id_x * hidden_group_size_x + local_id_x, so the kernel reads the hidden group size
// from the implicit arguments (which start at offset 24, after the explicit ones) and takes the workgroup id from the
// first system SGPR. gfx1100 wave32 needs 16 SGPRs initialised (LLVM FeatureUserSGPRInit16Bug): LLVM pads the user
// SGPR count to 15 so that the one system SGPR (workgroup id x) lands in s15, as it does here.
	.amdgcn_target "amdgcn-amd-amdhsa--gfx1100"
	.amdhsa_code_object_version 5
	.text
	.globl	scale_add
	.p2align	8
	.type	scale_add,@function
scale_add:
	s_load_b32 s2, s[0:1], 0x24            // hidden_group_size_x (u16 at 36) and _y above it
	s_load_b32 s3, s[0:1], 0x10            // count
	s_load_b128 s[4:7], s[0:1], 0x0        // out, in
	v_and_b32 v0, 0x3ff, v0                // local id x (packed work-item ids: x in bits 9:0)
	s_waitcnt lgkmcnt(0)
	s_and_b32 s2, s2, 0xffff
	s_mul_i32 s2, s2, s15                  // workgroup id x * group size x
	v_add_nc_u32 v1, s2, v0                // i = get_global_id(0)
	v_cmp_gt_i32 vcc_lo, s3, v1            // i < count
	s_and_saveexec_b32 s8, vcc_lo
	s_cbranch_execz .Lend
	v_lshlrev_b32 v2, 2, v1
	global_load_b32 v3, v2, s[6:7]
	s_waitcnt vmcnt(0)
	v_fma_f32 v3, v3, 2.0, 1.0
	global_store_b32 v2, v3, s[4:5]
.Lend:
	s_endpgm
.Lscale_add_end:
	.size	scale_add, .Lscale_add_end-scale_add

	.rodata
	.p2align	6
	.amdhsa_kernel scale_add
		.amdhsa_group_segment_fixed_size 0
		.amdhsa_private_segment_fixed_size 0
		.amdhsa_kernarg_size 280
		.amdhsa_user_sgpr_count 15
		.amdhsa_user_sgpr_dispatch_ptr 0
		.amdhsa_user_sgpr_queue_ptr 0
		.amdhsa_user_sgpr_kernarg_segment_ptr 1
		.amdhsa_user_sgpr_dispatch_id 0
		.amdhsa_user_sgpr_private_segment_size 0
		.amdhsa_wavefront_size32 1
		.amdhsa_uses_dynamic_stack 0
		.amdhsa_enable_private_segment 0
		.amdhsa_system_sgpr_workgroup_id_x 1
		.amdhsa_system_sgpr_workgroup_id_y 0
		.amdhsa_system_sgpr_workgroup_id_z 0
		.amdhsa_system_sgpr_workgroup_info 0
		.amdhsa_system_vgpr_workitem_id 0
		.amdhsa_next_free_vgpr 4
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
      - .address_space:  global
        .name:           in
        .offset:         8
        .size:           8
        .value_kind:     global_buffer
      - .name:           count
        .offset:         16
        .size:           4
        .value_kind:     by_value
      - .offset:         24
        .size:           4
        .value_kind:     hidden_block_count_x
      - .offset:         28
        .size:           4
        .value_kind:     hidden_block_count_y
      - .offset:         32
        .size:           4
        .value_kind:     hidden_block_count_z
      - .offset:         36
        .size:           2
        .value_kind:     hidden_group_size_x
      - .offset:         38
        .size:           2
        .value_kind:     hidden_group_size_y
      - .offset:         40
        .size:           2
        .value_kind:     hidden_group_size_z
      - .offset:         42
        .size:           2
        .value_kind:     hidden_remainder_x
      - .offset:         44
        .size:           2
        .value_kind:     hidden_remainder_y
      - .offset:         46
        .size:           2
        .value_kind:     hidden_remainder_z
      - .offset:         64
        .size:           8
        .value_kind:     hidden_global_offset_x
      - .offset:         72
        .size:           8
        .value_kind:     hidden_global_offset_y
      - .offset:         80
        .size:           8
        .value_kind:     hidden_global_offset_z
      - .offset:         88
        .size:           2
        .value_kind:     hidden_grid_dims
      - .offset:         112
        .size:           8
        .value_kind:     hidden_multigrid_sync_arg
    .group_segment_fixed_size: 0
    .kernarg_segment_align: 8
    .kernarg_segment_size: 280
    .language:       OpenCL C
    .language_version:
      - 2
      - 0
    .max_flat_workgroup_size: 256
    .name:           scale_add
    .private_segment_fixed_size: 0
    .sgpr_count:     18
    .sgpr_spill_count: 0
    .symbol:         scale_add.kd
    .uniform_work_group_size: 1
    .uses_dynamic_stack: false
    .vgpr_count:     4
    .vgpr_spill_count: 0
    .wavefront_size: 32
    .workgroup_processor_mode: 1
amdhsa.target:   amdgcn-amd-amdhsa--gfx1100
amdhsa.version:
  - 1
  - 2
...

	.end_amdgpu_metadata
