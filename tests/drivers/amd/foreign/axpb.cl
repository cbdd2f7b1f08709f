// An OpenCL C kernel that clang-19 compiles for amdgcn-amd-amdhsa (no device libraries: get_global_id is spelled
// with the builtins they implement it with, so the code object reads hidden_group_size_x from the implicit
// arguments and the workgroup id from a system SGPR, as an OpenCL runtime's kernels do).
kernel void axpb(global float *out, global const float *in, float a, int count) {
    uint i = __builtin_amdgcn_workgroup_id_x() * __builtin_amdgcn_workgroup_size_x() + __builtin_amdgcn_workitem_id_x();
    if (i < count)
        out[i] = in[i] * a + 1.0f;
}
