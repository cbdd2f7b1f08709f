"""LLVM's instruction sequences for f32/f16 division, f32 sqrt, exp2 and log2, copied instruction by instruction
from our compiler's gfx1100 code objects (objdump listing), run through emu.amd.isa.alu on many values and compared
with numpy: division and sqrt must be correctly rounded (bit-exact), exp2/log2 within the stated ulp bound."""
from __future__ import annotations

import numpy as np
import pytest

from emu.amd.isa import alu
from emu.amd.isa.instr import Instr

N = 100_000


def run(op: str, *srcs: np.ndarray, **fields: int) -> alu.VResult:
    return alu.vector(Instr(op=op, enc="VOP3", size=8, fields=fields), list(srcs))


def const(v: int, n: int) -> np.ndarray:
    return np.full(n, v, np.uint32)


def div_f32(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """gfx1100 listing: v_div_scale_f32 x2, v_rcp_f32, v_fma_f32/v_fmac_f32 Newton steps, v_div_fmas_f32,
    v_div_fixup_f32 (no s_denorm_mode: our kernels keep f32 denormals)."""
    n, d = num.view(np.uint32), den.view(np.uint32)
    ds = run("v_div_scale_f32", d, d, n).d            # v_div_scale_f32 v2, null, s3, s3, s2
    r = run("v_div_scale_f32", n, d, n)               # v_div_scale_f32 v4, vcc_lo, s2, den, s2
    ns, vcc = r.d, r.mask
    rc = run("v_rcp_f32", ds).d                       # v_rcp_f32 v3, v2
    t = run("v_fma_f32", ds, rc, const(0x3F800000, len(n)), neg=1).d  # v_fma_f32 v1, -v2, v3, 1.0
    rc = run("v_fmac_f32", t, rc, rc).d               # v_fmac_f32 v3, v1, v3
    q = run("v_mul_f32", ns, rc).d                    # v_mul_f32 v5, v4, v3
    t = run("v_fma_f32", ds, q, ns, neg=1).d          # v_fma_f32 v1, -v2, v5, v4
    q = run("v_fmac_f32", t, rc, q).d                 # v_fmac_f32 v5, v1, v3
    t = run("v_fma_f32", ds, q, ns, neg=1).d          # v_fma_f32 v2, -v2, v5, v4
    o = run("v_div_fmas_f32", t, rc, q, vcc).d        # v_div_fmas_f32 v2, v2, v3, v5
    return run("v_div_fixup_f32", o, d, n).d          # v_div_fixup_f32 v2, v2, den, s2


def div_f16(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """gfx1100 listing: f16 division through f32 (v_rcp_f32, v_fma_mix_f32 residuals, the error term truncated to
    a power of two with v_and_b32 0xff800000), v_cvt_f16_f32, v_div_fixup_f16."""
    n = len(num)
    nb, db = num.view(np.uint16).astype(np.uint32), den.view(np.uint16).astype(np.uint32)
    d32, n32 = run("v_cvt_f32_f16", db).d, run("v_cvt_f32_f16", nb).d
    r = run("v_rcp_f32", d32).d
    q = run("v_mul_f32", n32, r).d
    e = run("v_fma_mix_f32", db, q, nb, neg=1, opsel_hi=0b101).d  # v_fma_mix_f32 v6, -v4, v5, v3 op_sel_hi:[1,0,1]
    q = run("v_fmac_f32", e, r, q).d
    e = run("v_fma_mix_f32", db, q, nb, neg=1, opsel_hi=0b101).d
    t = run("v_mul_f32", e, r).d
    t = run("v_and_b32", const(0xFF800000, n), t).d
    q = run("v_add_f32", t, q).d
    h = run("v_cvt_f16_f32", q).d
    return run("v_div_fixup_f16", h, db, nb).d


def sqrt_f32(x: np.ndarray) -> np.ndarray:
    """gfx1100 listing: scale inputs below 2**-96 by 2**32, v_sqrt_f32, pick the neighbour with the right fma
    residual sign, scale back by 2**-16, pass +-0 and +inf through (v_cmp_class_f32 0x260)."""
    n, xb = len(x), x.view(np.uint32)
    big = run("v_mul_f32", const(0x4F800000, n), xb).d
    vcc = run("v_cmp_gt_f32", const(0x0F800000, n), xb).mask
    x2 = run("v_cndmask_b32", xb, big, vcc).d
    s = run("v_sqrt_f32", x2).d
    down, up = run("v_add_nc_u32", const(0xFFFFFFFF, n), s).d, run("v_add_nc_u32", const(1, n), s).d
    r_down, r_up = run("v_fma_f32", down, s, x2, neg=1).d, run("v_fma_f32", up, s, x2, neg=1).d
    s = run("v_cndmask_b32", s, down, run("v_cmp_ge_f32", const(0, n), r_down).mask).d
    s = run("v_cndmask_b32", s, up, run("v_cmp_lt_f32", const(0, n), r_up).mask).d
    s = run("v_cndmask_b32", s, run("v_mul_f32", const(0x37800000, n), s).d, vcc).d
    return run("v_cndmask_b32", s, x2, run("v_cmp_class_f32", x2, const(0x260, n)).mask).d


def exp2_f32(x: np.ndarray) -> np.ndarray:
    """gfx1100 listing: below -126 add 64 before v_exp_f32 and v_ldexp_f32 by -64 after, so results may be
    denormal although v_exp_f32 itself flushes them."""
    n, xb = len(x), x.view(np.uint32)
    vcc = run("v_cmp_gt_f32", const(0xC2FC0000, n), xb).mask
    t = run("v_add_f32", xb, run("v_cndmask_b32", const(0, n), const(0x42800000, n), vcc).d).d
    r = run("v_exp_f32", t).d
    return run("v_ldexp_f32", r, run("v_cndmask_b32", const(0, n), const(0xFFFFFFC0, n), vcc).d).d


def log2_f32(x: np.ndarray) -> np.ndarray:
    """gfx1100 listing: scale denormal inputs by 2**32 (v_ldexp_f32) and subtract 32 after v_log_f32."""
    n, xb = len(x), x.view(np.uint32)
    vcc = run("v_cmp_gt_f32", const(0x00800000, n), xb).mask
    xs = run("v_ldexp_f32", xb, run("v_cndmask_b32", const(0, n), const(32, n), vcc).d).d
    return run("v_sub_f32", run("v_log_f32", xs).d, run("v_cndmask_b32", const(0, n), const(0x42000000, n), vcc).d).d


EDGES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 3.0, 0.1, 2.0 ** -126, 2.0 ** -149, -(2.0 ** -149),
                  2.0 ** -140, 1.5 * 2.0 ** -130, 2.0 ** 127, 3.4028235e38, -3.4028235e38, 1.1754942e-38, 2.0 ** 100,
                  2.0 ** -100, 2.0 ** 64, 2.0 ** -64, 7.0, 1e-30, 1e30, 2.0 ** 126, 2.0 ** -103, 2.0 ** -104,
                  65504.0, 1.0000001, 0.99999994], np.float32)


def _rand_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def _log_uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    """Magnitudes spread evenly over every f32 binade, denormals included, random signs."""
    x = (rng.random(n) + 0.5) * 2.0 ** rng.integers(-150, 128, n)
    return np.where(rng.random(n) < 0.5, -x, x).astype(np.float32)


@pytest.mark.parametrize("kind", ["bits", "log_uniform", "edges"])
def test_f32_division_sequence_is_correctly_rounded(kind: str) -> None:
    rng = np.random.default_rng(11)
    if kind == "bits":
        a, b = _rand_bits(rng, N), _rand_bits(rng, N)
    elif kind == "log_uniform":
        a, b = _log_uniform(rng, N), _log_uniform(rng, N)
    else:  # every pair of edge values, and edge values against random ones
        r = _log_uniform(rng, 2000)
        a = np.concatenate([np.repeat(EDGES, len(EDGES)), np.repeat(EDGES, len(r)), np.tile(r, len(EDGES))])
        b = np.concatenate([np.tile(EDGES, len(EDGES)), np.tile(r, len(EDGES)), np.repeat(EDGES, len(r))])
    with np.errstate(all="ignore"):
        want = a / b
    got = div_f32(a, b)
    ok = (got == want.view(np.uint32)) | (np.isnan(want) & np.isnan(got.view(np.float32)))
    bad = np.nonzero(~ok)[0]
    assert bad.size == 0, [(float(a[i]), float(b[i]), hex(int(got[i])), hex(int(want.view(np.uint32)[i])))
                           for i in bad[:5]]


def test_f16_division_sequence_is_correctly_rounded() -> None:
    rng = np.random.default_rng(12)
    a = rng.integers(0, 65536, N).astype(np.uint16).view(np.float16)
    b = rng.integers(0, 65536, N).astype(np.uint16).view(np.float16)
    with np.errstate(all="ignore"):  # f64 quotient rounded once to f16 is correctly rounded (53 >= 2*11 + 2)
        want = (a.astype(np.float64) / b.astype(np.float64)).astype(np.float16)
    got = div_f16(a, b)
    ok = (got == want.view(np.uint16)) | (np.isnan(want) & np.isnan(got.astype(np.uint16).view(np.float16)))
    assert ok.all(), [(float(a[i]), float(b[i]), hex(int(got[i]))) for i in np.nonzero(~ok)[0][:5]]


def test_f32_sqrt_sequence_is_correctly_rounded() -> None:
    rng = np.random.default_rng(13)
    x = np.concatenate([np.abs(_rand_bits(rng, N)),
                        np.abs(_log_uniform(rng, N)), np.abs(EDGES), -EDGES])
    with np.errstate(all="ignore"):
        want = np.sqrt(x)
    got = sqrt_f32(x)
    ok = (got == want.view(np.uint32)) | (np.isnan(want) & np.isnan(got.view(np.float32)))
    assert ok.all(), [(float(x[i]), hex(int(got[i])), float(want[i])) for i in np.nonzero(~ok)[0][:5]]


def _ulps(got: np.ndarray, want64: np.ndarray) -> np.ndarray:
    """Distance in units of the f32 spacing at the exact value (denormal spacing below 2**-126)."""
    g = got.astype(np.float64)
    spacing = np.spacing(np.abs(want64).astype(np.float32)).astype(np.float64)
    return np.abs(g - want64) / spacing


def test_exp2_sequence_within_one_ulp() -> None:
    """exp2 over [-150, 128): at most 1 ulp from the exact value (the emulated v_exp_f32 is correctly rounded;
    the bound covers the second rounding of v_ldexp_f32 into denormals), inf/0/NaN exactly."""
    rng = np.random.default_rng(14)
    x = np.concatenate([(rng.random(N) * 278 - 150).astype(np.float32),
                        np.array([0, -0.0, 1, -1, 127, 128, -149, -150, -126, -126.5, np.inf, -np.inf, np.nan],
                                 np.float32)])
    want = np.exp2(x.astype(np.float64))
    got = exp2_f32(x).view(np.float32)
    finite = np.isfinite(want) & (want < 3.4e38)
    assert (_ulps(got[finite], want[finite]) <= 1.0).all()
    assert np.isinf(got[x == 128]).all() and got[x == np.inf][0] == np.inf and got[x == -np.inf][0] == 0
    assert np.isnan(got[np.isnan(x)]).all()
    assert (got[(x < -127) & (x > -149)] > 0).all()  # denormal results survive the sequence


def test_log2_sequence_within_one_ulp() -> None:
    """log2 over every positive binade (denormals too): at most 1 ulp (v_log_f32 correctly rounded here, then the
    v_sub_f32 of 32 rounds once more); specials: log2(0) = -inf, log2(-1) = NaN, log2(inf) = inf."""
    rng = np.random.default_rng(15)
    x = np.concatenate([np.abs(_log_uniform(rng, N)), np.array([1.0, 2.0, 0.5, 2.0 ** -149, 2.0 ** -127], np.float32)])
    x = x[x > 0]
    want = np.log2(x.astype(np.float64))
    got = log2_f32(x).view(np.float32)
    nonzero = want != 0
    assert (_ulps(got[nonzero], want[nonzero]) <= 1.0).all()
    assert got[x == 1.0][0] == 0 and got[x == 2.0 ** -149][0] == -149.0
    specials = log2_f32(np.array([0.0, -0.0, -1.0, np.inf, np.nan], np.float32)).view(np.float32)
    assert specials[0] == -np.inf and specials[1] == -np.inf and np.isnan(specials[2]) and specials[3] == np.inf
    assert np.isnan(specials[4])
