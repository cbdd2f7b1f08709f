"""The kernel IR: builder semantics, canonical keys, and clear errors for kernels that are not well formed."""
from __future__ import annotations

import pytest

from compiler import compile_kernel
from compiler.ir import IRError, Kernel, MulAdd, bool_, f16, f32, i32, maximum, muladd, sqrt, where
from sample_kernels import elementwise, matmul, row_sum


def test_builder_records_the_kernel_as_plain_data():
    k = Kernel("add", local_size=(64, 1, 1))
    a, b, out = k.buffer("a", f32), k.buffer("b", f32), k.buffer("out", f32, writable=True)
    n = k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        out[i] = a[i] + b[i]
    assert [p.name for p in k.params] == ["a", "b", "out", "n"]
    assert k.canonical() == ("kernel add(a: *float32, b: *float32, out: *float32 rw, n: int32) local_size=(64, 1, 1)\n"
                             "  if (lt (add (mul wg0 64:int32) lid0) %n):\n"
                             "    out[(add (mul wg0 64:int32) lid0)] = (add a[(add (mul wg0 64:int32) lid0)] "
                             "b[(add (mul wg0 64:int32) lid0)])\n")


def test_canonical_key_is_stable_and_sensitive():
    assert matmul().key() == matmul().key() and row_sum().key() == row_sum().key()
    base = elementwise("e", f32, lambda x, y: x + y).key()
    variants = [elementwise("e", f32, lambda x, y: x - y), elementwise("e", f32, lambda x, y: x + y, local=32),
                elementwise("e", f16, lambda x, y: x + y), elementwise("f", f32, lambda x, y: x + y),
                elementwise("e", f32, lambda x, y: x + y + 0.0), matmul(tile=4)]
    keys = {base} | {v.key() for v in variants}
    assert len(keys) == len(variants) + 1, "every change to the kernel changes its key"


def test_python_numbers_take_the_other_operands_type():
    k = Kernel("c")
    h = k.buffer("h", f16)
    assert (h[0] * 2).dtype == f16 and (2 * h[0]).dtype == f16 and (1.5 - h[0]).dtype == f16
    assert (k.scalar("n") + 1).dtype == i32
    assert where(h[0] < 1, 1, 2).dtype == i32 and where(h[0] < 1, 1.0, 2).dtype == f32
    acc = k.var(f32, 0.0, "acc")
    assert (acc + 1).dtype == f32 and (3.0 * acc).dtype == f32 and (-acc).dtype == f32 and maximum(acc, 0).dtype == f32


def test_operand_type_mismatch_names_the_op_and_both_types():
    k = Kernel("bad", local_size=(4, 1, 1))
    a, n = k.buffer("a", f32), k.scalar("n")
    with pytest.raises(IRError, match=r"add: operand types differ \(float32 and int32\)"):
        a[0] + n
    with pytest.raises(IRError, match=r"lt: operand types differ \(int32 and float32\)"):
        n < a[0]
    with pytest.raises(IRError, match=r"max: operand types differ \(float16 and float32\)"):
        maximum(k.buffer("h", f16)[0], a[0])
    with pytest.raises(IRError, match="float constant 0.5 used with int32"):
        n + 0.5
    with pytest.raises(IRError, match="sqrt needs a float operand, got int32"):
        sqrt(n)


def test_muladd_is_typed_and_printed():
    k = Kernel("m")
    a, h, n = k.buffer("a", f32), k.buffer("h", f16), k.scalar("n")
    e = muladd(a[0], 2, a[1])  # numbers take the first operand's type
    assert isinstance(e, MulAdd) and e.dtype == f32
    assert muladd(h[0], h[1], 1.5).dtype == f16
    assert not isinstance(muladd(n, n, 1), MulAdd) and muladd(n, n, 1).dtype == i32  # int32: multiply, then add
    with pytest.raises(IRError, match=r"muladd: operand types differ \(float32, float32, float16\)"):
        MulAdd(a[0], a[1], h[0])
    out = k.buffer("out", f32, writable=True)
    out[0] = e
    assert "out[0:int32] = (muladd a[0:int32] 2.0:float32 a[1:int32])" in k.canonical()


def test_division_operators_are_typed():
    k = Kernel("d")
    a, n = k.buffer("a", f32), k.scalar("n")
    with pytest.raises(IRError, match=r"div: / needs float operands, got int32; use //"):
        n / 2
    with pytest.raises(IRError, match=r"idiv: // needs int32 operands, got float32; use /"):
        a[0] // 2.0
    assert (n // 2).op == "idiv" and (a[0] / 2).op == "div"


def test_stores_are_checked_as_they_are_written():
    k = Kernel("st", local_size=(4, 1, 1))
    a, out = k.buffer("a", f32), k.buffer("out", i32, writable=True)
    with pytest.raises(IRError, match="store to a, which is read-only: declare it with writable=True"):
        a[0] = 1.0
    with pytest.raises(IRError, match="store of float32 into out of int32; cast the value"):
        out[0] = a[0]
    with pytest.raises(IRError, match="index into a must be int32, got float32"):
        a[a[0]]


def test_expressions_cannot_steer_python_control_flow():
    k = Kernel("py")
    n = k.scalar("n")
    with pytest.raises(IRError, match=r"use k\.if_\(cond\) or where"):
        if n < 3:
            pass


def test_kernel_shape_names_and_memory_limits():
    with pytest.raises(IRError, match="local_size must be three sizes >= 1"):
        Kernel("x", local_size=(0, 1, 1))
    with pytest.raises(IRError, match="2048 work-items; at most 1024"):
        Kernel("x", local_size=(32, 32, 2))
    with pytest.raises(IRError, match="must be an identifier"):
        Kernel("not a name")
    k = Kernel("names")
    k.buffer("a", f32)
    with pytest.raises(IRError, match="the name 'a' is already used"):
        k.scalar("a")
    with pytest.raises(IRError, match="must be an identifier not starting with _"):
        k.var(f32, 0.0, "_hidden")
    with pytest.raises(IRError, match="bool memory is not supported"):
        k.buffer("flags", bool_)
    k.local_array(f32, 16384)
    with pytest.raises(IRError, match="local arrays need 65540 bytes; at most 65536"):
        k.local_array(f16, 2)


def test_loop_counters_are_read_only_and_scoped():
    k = Kernel("loops")
    out = k.buffer("out", i32, writable=True)
    with k.range(0, 4) as j:
        out[j] = j
    with pytest.raises(IRError, match="is a loop counter; only its loop assigns it"):
        k.vars[-1].set(3)
    out[0] = j  # the counter escaping its loop is only visible to the whole-kernel check
    with pytest.raises(IRError, match="loop counter _i0 is read outside its loop"):
        k.validate()


def test_validator_refuses_barriers_under_divergent_control_flow():
    k = Kernel("div", local_size=(4, 1, 1))
    out = k.buffer("out", f32, writable=True)
    with k.if_(k.local_id(0) < 2):
        k.barrier()
        out[0] = 1.0
    with pytest.raises(IRError, match=r"barrier inside control flow that depends on the local id \(if \(lt lid0 2:int32\)\)"):
        k.validate()
    # Divergence carried by a variable, and by a loop bound read through a load, counts too.
    k2 = Kernel("div2", local_size=(4, 1, 1))
    src, out2 = k2.buffer("src", i32), k2.buffer("out", i32, writable=True)
    t = k2.var(i32, k2.local_id(0), "t")
    with k2.range(0, src[t]):
        k2.barrier()
    with pytest.raises(IRError, match=r"for \$_i\d+ in 0:int32\.\.src\[\$t\]"):
        compile_kernel(k2, "host")
    del out2


def test_validator_allows_barriers_under_uniform_control_flow():
    k = Kernel("uni", local_size=(4, 1, 1))
    out = k.buffer("out", i32, writable=True)
    n = k.scalar("n")
    tile = k.local_array(i32, 4, "tile")
    m = k.var(i32, n * 2, "m")  # uniform: computed from a scalar only
    with k.if_(k.workgroup_id(0) < n):
        with k.range(0, m) as r:
            tile[k.local_id(0)] = r
            k.barrier()
    k.validate()
    assert out.name == "out"


def test_validator_checks_ownership_and_constant_bounds():
    k1, k2 = Kernel("one"), Kernel("two")
    a1 = k1.buffer("a", f32)
    out2 = k2.buffer("out", f32, writable=True)
    out2[0] = a1[0]
    lds = k2.local_array(f32, 4, "lds")
    lds[4] = 1.0
    with pytest.raises(IRError) as e:
        k2.validate()
    assert "a belongs to kernel one, not two" in str(e.value)
    assert "index 4 is outside local array lds[4]" in str(e.value)


def test_unknown_target_is_a_clear_error(cache):
    with pytest.raises(Exception, match="unknown target 'gfx9000'; targets are host, gfx1100"):
        compile_kernel(elementwise("e", f32, lambda x, y: x + y), "gfx9000", cache)
