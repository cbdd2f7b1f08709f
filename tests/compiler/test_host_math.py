"""The host target's own float32 transcendentals (compiler/host_math): accurate against numpy on dense sweeps and at
the edges numpy handles, and vectorised (no scalar libm calls) in the machine code of an elementwise kernel.

Bounds: every function is within 2 ulp of the float64 result rounded to float32 (numpy's own float32 loops are within
about 3); sin and cos are also within 1e-7 absolute near their zeros, for |x| up to 1e6 (ulp is meaningless there).
"""
from __future__ import annotations

import math
import platform
import re

import numpy as np
import pytest

from compiler import compile_kernel, toolchain
from compiler.ir import Kernel, cos, exp, exp2, f16, f32, log, log2, sin, sqrt
from compiler.llvm_render import render
from sample_kernels import elementwise

ULP_BOUND = 2.0
OPS = {"exp2": (exp2, np.exp2), "exp": (exp, np.exp), "log2": (log2, np.log2), "log": (log, np.log),
       "sin": (sin, np.sin), "cos": (cos, np.cos), "sqrt": (sqrt, np.sqrt)}
F32 = np.finfo(np.float32)
EDGES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, F32.tiny, -F32.tiny, F32.smallest_subnormal, F32.max,
                  -F32.max, 0.5, 2.0, 88.72, 88.73, -87.33, -103.97, -104.0, 127.99, 128.0, -126.0, -149.0, -149.5,
                  -150.0, -1e30, 1e30, math.pi, -math.pi, math.pi / 2, 1e-20, -1e-20, 1e5, -1e5, 7.0e4, 1e6],
                 np.float32)


def sweep(op: str) -> np.ndarray:
    """A dense sweep over where op is finite and interesting, plus the edges and random bit patterns."""
    rng = np.random.default_rng(1)
    parts = {"exp2": [np.linspace(-152, 129, 600_001)], "exp": [np.linspace(-105, 89.5, 600_001)],
             "log2": [np.geomspace(1e-45, 3.4e38, 600_001), np.linspace(0.5, 2, 200_001)],
             "sin": [np.linspace(-10, 10, 400_001), np.linspace(-1e5, 1e5, 400_001), rng.uniform(-1e6, 1e6, 200_000)],
             "sqrt": [np.geomspace(1e-45, 3.4e38, 200_001)]}
    parts["log"], parts["cos"] = parts["log2"], parts["sin"]
    bits = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([np.asarray(p, np.float32) for p in parts[op]] + [EDGES, bits])


def run_unary(cache, op: str, x: np.ndarray, dtype=f32) -> np.ndarray:
    fn = OPS[op][0]
    ck = compile_kernel(elementwise(f"hm_{op}_{dtype.name}", dtype, lambda a, b: fn(a), local=256), "host", cache)
    out = np.zeros_like(x)
    ck(x, x, out, len(x), global_size=(-(-len(x) // 256), 1, 1))
    return out


def ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 spacing at the exact result (where that is finite in float32)."""
    ref = exact.astype(np.float32)
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(ref)).astype(np.float64)


@pytest.mark.parametrize("op", list(OPS))
def test_within_bound_of_numpy_on_a_dense_sweep(cache, op):
    x = sweep(op)
    got = run_unary(cache, op, x)
    with np.errstate(all="ignore"):
        exact, numpy32 = OPS[op][1](x.astype(np.float64)), OPS[op][1](x)
    special = ~np.isfinite(exact) | (np.abs(exact) > F32.max)
    # NaN, inf and overflow exactly where numpy's float32 function has them, with numpy's sign.
    np.testing.assert_array_equal(np.isnan(got), np.isnan(numpy32))
    np.testing.assert_array_equal(got[special & ~np.isnan(got)], numpy32[special & ~np.isnan(got)])
    fine = ~special & (np.abs(x) <= 1e6 if op in ("sin", "cos") else True)  # the accurate range of sin and cos
    err = ulp_error(got[fine], exact[fine])
    if op in ("sin", "cos"):
        # Near a zero of sin/cos the result is tiny and its ulp meaningless: bound the absolute error there.
        near_zero = np.abs(exact[fine]) < 1e-3
        assert np.abs(got[fine] - exact[fine])[near_zero].max() <= 1e-7
        err = np.where(near_zero, 0.0, err)
    worst = int(np.argmax(err))
    assert err.max() <= ULP_BOUND, f"{op}: {err.max():.2f} ulp at x={x[fine][worst]!r}"


@pytest.mark.parametrize("op,x,want", [
    ("exp", -np.inf, 0.0), ("exp", np.inf, np.inf), ("exp", 89.0, np.inf), ("exp", -104.0, np.exp(np.float32(-104))),
    ("exp", -200.0, 0.0), ("exp2", -149.0, F32.smallest_subnormal), ("exp2", -151.0, 0.0), ("exp2", 128.0, np.inf),
    ("exp2", 127.0, 2.0**127), ("log", 0.0, -np.inf), ("log", -0.0, -np.inf), ("log", np.inf, np.inf),
    ("log2", F32.smallest_subnormal, -149.0), ("log2", 1.0, 0.0), ("log2", 0.25, -2.0), ("sin", -0.0, -0.0),
    ("sin", 0.0, 0.0), ("cos", 0.0, 1.0), ("sqrt", -0.0, -0.0),
])
def test_edge_values_are_numpys(cache, op, x, want):
    got = run_unary(cache, op, np.array([x], np.float32))[0]
    assert got == want and np.signbit(got) == np.signbit(want), f"{op}({x}) = {got!r}, numpy gives {want!r}"


@pytest.mark.parametrize("op,x", [("log", -1.0), ("log2", -F32.tiny), ("log", -np.inf), ("sin", np.inf),
                                  ("cos", -np.inf), ("sqrt", -1.0)] + [(op, np.nan) for op in OPS])
def test_nan_where_numpy_gives_nan(cache, op, x):
    assert np.isnan(run_unary(cache, op, np.array([x], np.float32))[0])


def test_sin_cos_stay_bounded_far_beyond_the_accurate_range(cache):
    x = np.array([1e16, -3e20, 1e30, F32.max, -F32.max, 2.0**60], np.float32)
    for op in ("sin", "cos"):
        got = run_unary(cache, op, x)
        assert np.all(np.abs(got) <= 1.0), f"{op}: {got}"


def test_float16_computes_in_float32_and_rounds_once(cache):
    x = np.linspace(-8, 8, 4001).astype(np.float16)
    for op in ("exp", "sin", "cos", "log2"):
        got = run_unary(cache, op, np.abs(x) if op == "log2" else x, f16)
        with np.errstate(all="ignore"):
            want = OPS[op][1]((np.abs(x) if op == "log2" else x).astype(np.float32)).astype(np.float16)
        np.testing.assert_array_equal(got, want)


def test_gpu_targets_keep_their_native_intrinsics():
    k = elementwise("gpu_math", f32, lambda a, b: exp(a) + cos(b) + log(a) + exp2(b) + sin(a))
    for target in ("gfx1100", "sm_90"):
        text = render(k, target)
        assert ".host." not in text, f"{target} got the host's definitions"
        assert "@llvm.exp2.f32" in text and "@llvm.sin.f32" in text
    host = render(k, "host")
    assert "@llvm.exp2" not in host and "@llvm.sin" not in host and "@llvm.log2" not in host


def host_assembly(k: Kernel) -> str:
    """The optimised host machine code of k, as assembly text (what host_object would emit as an object)."""
    tm = toolchain._host_tm()
    mod = toolchain._parse(render(k, "host"), k.name)
    mod.triple, mod.data_layout = tm.triple, str(tm.target_data)
    toolchain._optimize(mod, tm)
    return tm.emit_assembly(mod)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or "avx2" not in toolchain.host_features(),
                    reason="the check reads x86 AVX2/AVX-512 registers; this host is not x86-64 with AVX2")
def test_exp_sin_kernel_is_vectorised_without_libm_calls():
    k = elementwise("vec_exp_sin", f32, lambda a, b: exp(a * 1.5) * sin(b) + cos(a) + log(b), local=256)
    asm = host_assembly(k)
    calls = re.findall(r"\bcall\w*\s+(\S+)", asm)
    assert not calls, f"the kernel still calls {calls}"
    assert not re.search(r"\b(expf|exp2f|sinf|cosf|logf|log2f)\b", asm)
    # Packed float arithmetic on 256- or 512-bit registers: what the loop vectorizer made of the math.
    packed = re.findall(r"\bv(?:fmadd\w*|mulps|addps|subps)\s+%[yz]mm", asm)
    assert len(packed) >= 20, f"only {len(packed)} packed float instructions on ymm/zmm registers"
