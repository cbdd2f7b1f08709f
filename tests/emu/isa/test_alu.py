"""emu.amd.isa.alu: bit-exact SALU/VALU semantics against numpy, exact rationals and hand-computed values."""
from __future__ import annotations

import struct
from fractions import Fraction

import numpy as np
import pytest

from emu.amd.isa import alu
from emu.amd.isa.alu import FloatMode
from emu.amd.isa.instr import Instr

# every SALU/VALU mnemonic (suffix stripped) in our compiler's gfx1100 and gfx1201 code objects
LISTED = """s_add_co_i32 s_add_f32 s_add_i32 s_add_nc_u64 s_add_u32 s_addc_u32 s_addk_co_i32 s_addk_i32 s_and_b32
s_and_not1_b32 s_and_not1_saveexec_b32 s_and_saveexec_b32 s_ashr_i32 s_cmp_eq_u32 s_cmp_gt_i32 s_cmp_lg_u32
s_cmp_lt_i32 s_cmp_lt_u32 s_cmp_u_f32 s_cmpk_gt_i32 s_cmpk_lg_i32 s_cmpk_lt_i32 s_cmpk_lt_u32 s_cselect_b32
s_cvt_f32_i32 s_lshl_b32 s_lshl_b64 s_lshr_b32 s_max_num_f32 s_min_i32 s_mov_b32 s_mul_f32 s_mul_hi_i32 s_mul_i32
s_mulk_i32 s_or_b32 s_or_saveexec_b32 s_sub_co_i32 s_sub_i32 s_xor_b32 v_add3_u32 v_add_co_ci_u32 v_add_co_u32
v_add_f16 v_add_f32 v_add_lshl_u32 v_add_nc_u16 v_add_nc_u32 v_and_b16 v_and_b32 v_and_or_b32 v_ashrrev_i16
v_ashrrev_i32 v_bfe_i32 v_bfe_u32 v_bfi_b32 v_bfrev_b32 v_cmp_class_f16 v_cmp_class_f32 v_cmp_eq_f16 v_cmp_eq_f32
v_cmp_eq_u32 v_cmp_ge_f16 v_cmp_ge_f32 v_cmp_ge_u32 v_cmp_gt_f16 v_cmp_gt_f32 v_cmp_gt_i32 v_cmp_gt_u32 v_cmp_le_f32
v_cmp_lg_f32 v_cmp_lt_f16 v_cmp_lt_f32 v_cmp_lt_i32 v_cmp_ne_u32 v_cmp_neq_f16 v_cmp_neq_f32 v_cmp_nge_f32
v_cmp_ngt_f32 v_cmp_nle_f32 v_cmp_nlt_f32 v_cmp_o_f16 v_cmp_o_f32 v_cmp_u_f16 v_cmp_u_f32 v_cmpx_gt_i32 v_cmpx_gt_u32
v_cmpx_lt_i32 v_cndmask_b16 v_cndmask_b32 v_cvt_f16_f32 v_cvt_f32_f16 v_cvt_f32_i32 v_cvt_f32_u32 v_cvt_i32_f32
v_cvt_u32_f32 v_div_fixup_f16 v_div_fixup_f32 v_div_fmas_f32 v_div_scale_f32 v_dual_add_f32 v_dual_cndmask_b32
v_dual_fmac_f32 v_dual_max_f32 v_dual_max_num_f32 v_dual_mov_b32 v_dual_mul_f32 v_dual_sub_f32 v_exp_f32 v_fma_f32
v_fma_mix_f32 v_fma_mixlo_f16 v_fmac_f32 v_fmamk_f32 v_frexp_exp_i32_f32 v_frexp_mant_f32 v_ldexp_f32 v_log_f32
v_lshl_add_u32 v_lshl_or_b32 v_lshlrev_b32 v_lshlrev_b64 v_lshrrev_b16 v_lshrrev_b32 v_mad_co_u64_u32 v_mad_u32_u24
v_mad_u64_u32 v_max_f16 v_max_f32 v_max_i32 v_max_num_f16 v_max_num_f32 v_max_u32 v_min3_i32 v_min_f16 v_min_f32
v_min_i32 v_min_num_f16 v_min_num_f32 v_min_u32 v_mov_b16 v_mov_b32 v_mul_f16 v_mul_f32 v_mul_hi_i32 v_mul_hi_u32
v_mul_i32_i24 v_mul_lo_u16 v_mul_lo_u32 v_mul_u32_u24 v_not_b32 v_or3_b32 v_or_b16 v_or_b32 v_rcp_f16 v_rcp_f32
v_rcp_iflag_f32 v_rndne_f32 v_rsq_f32 v_sin_f32 v_sqrt_f32 v_sub_co_ci_u32 v_sub_f16 v_sub_f32 v_sub_nc_u16
v_sub_nc_u32 v_subrev_co_ci_u32 v_subrev_nc_u32 v_xad_u32 v_xnor_b32 v_xor_b32""".split()


def V(op: str, *srcs, **fields) -> alu.VResult:
    mode = fields.pop("mode", None)
    arrs = [np.atleast_1d(np.asarray(s)) for s in srcs]
    return alu.vector(Instr(op=op, enc="VOP3", size=8, fields=fields), arrs, mode)


def S(op: str, *srcs: int, scc: bool = False, exec: int = 0, wave64: bool = False, **fields) -> alu.SResult:
    return alu.scalar(Instr(op=op, enc="SOP2", size=4, fields=fields), list(srcs), scc, exec, wave64)


def f32(*x) -> np.ndarray:
    return np.array(x, np.float32).view(np.uint32)


def h16(*x) -> np.ndarray:
    return np.array(x, np.float16).view(np.uint16).astype(np.uint32)


def asf(d: np.ndarray) -> np.ndarray:
    return d.view(np.float32)


def ash(d: np.ndarray) -> np.ndarray:
    return (d & 0xFFFF).astype(np.uint16).view(np.float16)


def fbits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


U32 = lambda *x: np.array(x, np.uint64).astype(np.uint32)  # noqa: E731


# ---- coverage and interface ----------------------------------------------------------------------------------------

def test_every_listed_op_is_emulated_and_typed() -> None:
    for op in LISTED:
        assert alu.has_vector(op) or alu.has_scalar(op), op
        for i in range(alu.source_count(op)):
            assert alu.operand_type(op, i) in ("f16", "f32", "f64", "b16", "u16", "i16", "b32", "u32", "i32", "b64",
                                               "u64", "i64", "mask")
        assert alu.dest_type(op, 0)
    assert [alu.operand_type("v_cndmask_b32", i) for i in range(3)] == ["b32", "b32", "mask"]
    assert (alu.dest_type("v_add_co_u32", 0), alu.dest_type("v_add_co_u32", 1)) == ("u32", "mask")
    assert alu.dest_type("v_mad_u64_u32") == "u64" and alu.operand_type("v_mad_u64_u32", 2) == "u64"
    assert alu.operand_type("v_lshlrev_b64", 1) == "b64" and alu.dest_type("v_cmp_gt_f32") == "mask"
    assert alu.reads_dest("v_fmac_f32") and alu.reads_dest("v_dual_fmac_f32") and alu.reads_dest("s_addk_i32")
    assert not alu.reads_dest("v_fma_f32") and alu.writes_exec("v_cmpx_gt_i32_e32")
    assert alu.dest_type("s_cmp_u_f32") == "none" and alu.operand_type("s_lshl_b64", 0) == "b64"


def test_unknown_ops_and_bad_calls_say_what_is_wrong() -> None:
    with pytest.raises(NotImplementedError, match="v_wmma_f32_16x16x16_f16.*not emulated"):
        V("v_wmma_f32_16x16x16_f16", U32(1))
    with pytest.raises(NotImplementedError, match="s_getpc_b64.*not emulated"):
        S("s_getpc_b64")
    with pytest.raises(ValueError, match="v_cndmask_b32 .* takes 3 sources"):
        V("v_cndmask_b32", U32(1), U32(2))
    with pytest.raises(IndexError, match="v_add_f32 has 2 sources"):
        alu.operand_type("v_add_f32", 2)


# ---- float arithmetic --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,fn", [("v_add_f32", np.add), ("v_sub_f32", np.subtract), ("v_mul_f32", np.multiply),
                                   ("v_subrev_f32", lambda a, b: b - a)])
def test_f32_arithmetic_matches_numpy_bit_for_bit(op: str, fn) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32)
    got = V(op, a, b).d
    with np.errstate(all="ignore"):
        want = fn(a.view(np.float32), b.view(np.float32))
    nan = np.isnan(want)
    assert (got[~nan] == want.view(np.uint32)[~nan]).all()  # denormals kept, round to nearest even
    assert np.isnan(asf(got[nan])).all()


def test_nan_results_propagate_first_nan_operand_quieted_else_default() -> None:
    snan, qnan2 = 0x7F800001, 0xFFC00002
    assert V("v_add_f32", U32(snan), U32(qnan2)).d[0] == 0x7FC00001
    assert V("v_mul_f32", f32(1.0), U32(qnan2)).d[0] == 0xFFC00002
    assert V("v_add_f32", f32(np.inf), f32(-np.inf)).d[0] == 0x7FC00000
    assert V("v_mul_f32", f32(0.0), f32(np.inf)).d[0] == 0x7FC00000


def test_f16_arithmetic_rounds_once() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 65536, 20000).astype(np.uint16)
    b = rng.integers(0, 65536, 20000).astype(np.uint16)
    fa, fb = a.view(np.float16).astype(np.float64), b.view(np.float16).astype(np.float64)
    for op, fn in (("v_add_f16", np.add), ("v_mul_f16", np.multiply), ("v_sub_f16", np.subtract)):
        got = V(op, a.astype(np.uint32), b.astype(np.uint32))
        with np.errstate(all="ignore"):
            want = fn(fa, fb).astype(np.float16)  # exact in f64, one rounding to f16
        ok = (ash(got.d) == want) | (np.isnan(ash(got.d)) & np.isnan(want)) | ((ash(got.d) == 0) & (want == 0))
        assert ok.all() and (got.d >> 16 == 0).all()
        assert ((got.d & 0x8000) == (want.view(np.uint16) & 0x8000))[~np.isnan(want)].all()


def _exact_fma(a: float, b: float, c: float) -> np.float32:
    return np.float32(float(Fraction(a) * Fraction(b) + Fraction(c)))  # Fraction -> f64 exact here, then one rounding


def test_fma_rounds_once_where_f64_would_round_twice() -> None:
    a = fbits(1 + 2 ** -12)
    got = V("v_fma_f32", U32(a), U32(a), f32(2.0 ** -60)).d[0]
    # exact 1 + 2^-11 + 2^-24 + 2^-60: just above the f32 tie, so it rounds up; a*b+c in f64 would tie to even
    assert got == fbits(1 + 2 ** -11 + 2 ** -23)
    rng = np.random.default_rng(3)
    x = ((rng.random((3, 3000)) + 0.5) * 2.0 ** rng.integers(-60, 60, (3, 3000))).astype(np.float32)
    x *= np.where(rng.random((3, 3000)) < 0.5, -1, 1).astype(np.float32)
    got = asf(V("v_fma_f32", *[r.view(np.uint32) for r in x]).d)
    want = np.array([float(Fraction(float(p)) * Fraction(float(q)) + Fraction(float(r))) for p, q, r in x.T])
    want32 = np.array([np.float32(w) if abs(w) > 2.0 ** -100 else np.float32(0) for w in want])
    close = np.abs(got.astype(np.float64) - want) <= np.abs(np.spacing(want32).astype(np.float64)) / 2
    assert close.all()
    assert V("v_fmac_f32", f32(2.0), f32(3.0), f32(1.0)).d[0] == fbits(7.0)  # src[2] is the old destination
    assert V("v_fmamk_f32", f32(2.0), f32(10.0), f32(1.0)).d[0] == fbits(21.0)  # v_fmamk v0, v1, K, v2: v1*K+v2
    assert V("v_fma_f32", f32(np.inf), f32(0.0), f32(1.0)).d[0] == 0x7FC00000


def test_min_max_gfx11_ieee_and_gfx12_num_semantics() -> None:
    qnan, snan = 0x7FC00000, 0x7F800001
    one = fbits(1.0)
    assert V("v_max_f32", U32(qnan), U32(one)).d[0] == one and V("v_min_f32", U32(one), U32(qnan)).d[0] == one
    assert V("v_max_f32", U32(snan), U32(one)).d[0] == 0x7FC00001  # IEEE mode: sNaN in -> quieted NaN out
    no_ieee = FloatMode(ieee=False)
    assert V("v_max_f32", U32(snan), U32(one), mode=no_ieee).d[0] == one
    assert V("v_max_num_f32", U32(snan), U32(one)).d[0] == one  # maximumNumber: the number wins
    assert V("v_max_num_f32", U32(snan), U32(qnan)).d[0] == 0x7FC00001
    assert V("v_maximum_f32", U32(one), U32(qnan)).d[0] == qnan  # IEEE 754-2019 maximum propagates NaN
    assert V("v_max_f32", f32(-0.0), f32(0.0)).d[0] == 0 and V("v_min_f32", f32(0.0), f32(-0.0)).d[0] == 0x80000000
    assert V("v_max_num_f32", f32(0.0), f32(-0.0)).d[0] == 0 and V("v_min_num_f32", f32(0.0), f32(-0.0)).d[0] != 0
    assert ash(V("v_max_f16", h16(1.0), h16(-2.0)).d)[0] == 1.0 and ash(V("v_min_num_f16", h16(1), h16(-2)).d)[0] == -2
    assert V("v_med3_f32", U32(qnan), f32(1.0), f32(2.0)).d[0] == fbits(1.0)
    assert V("v_med3_f32", f32(3.0), f32(1.0), f32(2.0)).d[0] == fbits(2.0)


def test_float_compares_with_nan_and_class() -> None:
    a = f32(1.0, 2.0, np.nan, 1.0, -0.0)
    b = f32(2.0, 2.0, 1.0, np.nan, 0.0)
    expect = {"lt": [1, 0, 0, 0, 0], "eq": [0, 1, 0, 0, 1], "le": [1, 1, 0, 0, 1], "gt": [0, 0, 0, 0, 0],
              "lg": [1, 0, 0, 0, 0], "ge": [0, 1, 0, 0, 1], "o": [1, 1, 0, 0, 1], "u": [0, 0, 1, 1, 0],
              "nge": [1, 0, 1, 1, 0], "nlg": [0, 1, 1, 1, 1], "ngt": [1, 1, 1, 1, 1], "nle": [0, 0, 1, 1, 0],
              "neq": [1, 0, 1, 1, 0], "nlt": [0, 1, 1, 1, 1]}
    for cond, want in expect.items():
        assert V(f"v_cmp_{cond}_f32", a, b).mask.tolist() == [bool(w) for w in want], cond
        assert V(f"v_cmp_{cond}_f16", h16(1, 2, np.nan, 1, -0.0), h16(2, 2, 1, np.nan, 0)).mask.tolist() == \
            [bool(w) for w in want], cond
    x = U32(0x7F800001, 0x7FC00000, 0xFF800000, fbits(-1.0), 0x80000001, 0x80000000, 0, 1, fbits(1.0), 0x7F800000)
    for bit in range(10):  # class i is exactly bit i of the mask operand
        assert V("v_cmp_class_f32", x, U32(*[1 << bit] * 10)).mask.tolist() == [i == bit for i in range(10)]
    assert V("v_cmp_class_f16", U32(0x7C00, 0x0001), U32(0x200, 0x80)).mask.tolist() == [True, True]


def test_integer_compares_and_cmpx() -> None:
    a, b = U32(0xFFFFFFFF, 1, 5), U32(1, 0xFFFFFFFF, 5)
    assert V("v_cmp_gt_i32", a, b).mask.tolist() == [False, True, False]
    assert V("v_cmp_gt_u32", a, b).mask.tolist() == [True, False, False]
    assert V("v_cmpx_lt_i32", a, b).mask.tolist() == [True, False, False]
    assert V("v_cmp_ne_u32", a, b).mask.tolist() == [True, True, False]
    assert V("v_cmp_ge_u32", a, b).mask.tolist() == [True, False, True]


# ---- modifiers ---------------------------------------------------------------------------------------------------

def test_abs_neg_clamp_omod_and_flush() -> None:
    assert V("v_mul_f32", f32(1.0), f32(-0.0), abs=0b10).d[0] == 0
    assert V("v_mul_f32", f32(1.0), f32(-0.0), abs=0b10, neg=0b10).d[0] == 0x80000000
    assert V("v_add_f32", f32(2.0), f32(3.0), neg=0b01).d[0] == fbits(1.0)
    assert V("v_cndmask_b32", f32(2.0), f32(5.0), np.array([False]), neg=0b10).d[0] == fbits(2.0)
    assert V("v_cndmask_b32", f32(2.0), f32(5.0), np.array([True]), neg=0b10).d[0] == fbits(-5.0)  # -v2 in listing
    assert asf(V("v_add_f32", f32(0.5, -3.0, 0.75, np.nan), f32(1.0, 1.0, 0.0, 0.0), clamp=1).d).tolist() == \
        [1.0, 0.0, 0.75, 0.0]
    assert V("v_max_f32", f32(-0.0), f32(-1.0), clamp=1).d[0] == 0  # clamp gives +0
    assert V("v_add_f32", f32(3.0), f32(1.0), omod=1).d[0] == fbits(4.0)  # IEEE mode (gfx11): omod ignored
    no_ieee = FloatMode(ieee=False)
    assert [V("v_add_f32", f32(3.0), f32(1.0), omod=m, mode=no_ieee).d[0] for m in (1, 2, 3)] == \
        [fbits(8.0), fbits(16.0), fbits(2.0)]
    den = U32(0x00000010)
    assert V("v_add_f32", den, f32(0.0)).d[0] == 0x10  # default mode keeps denormals
    assert V("v_add_f32", den, f32(0.0), mode=FloatMode(flush32=True)).d[0] == 0
    assert V("v_mul_f32", f32(2.0 ** -100), f32(2.0 ** -30), mode=FloatMode(flush32=True)).d[0] == 0
    assert ash(V("v_add_f16", U32(1), U32(0), mode=FloatMode(flush32=True)).d)[0] != 0  # f16 keeps its own mode


def test_opsel_selects_16bit_halves_and_destination_half() -> None:
    both = U32(h16(3.0)[0] << 16 | h16(5.0)[0])
    r = V("v_add_f16", both, both, opsel=0b0001)
    assert ash(r.d)[0] == 8.0 and not r.d16_hi
    r = V("v_add_f16", both, both, opsel=0b1011)
    assert ash(r.d)[0] == 6.0 and r.d16_hi
    assert V("v_mov_b16", U32(0xABCD1234), opsel=1).d[0] == 0xABCD
    assert ash(V("v_mul_f16", both, h16(2.0), neg=1, opsel=1).d)[0] == -6.0
    assert asf(V("v_cvt_f32_f16", both, opsel=1).d)[0] == 3.0
    assert V("v_cvt_f16_f32", f32(1.0)).d[0] == 0x3C00  # low half only: the executor keeps the high half
    assert V("v_cndmask_b16", U32(0x11112222), U32(0x33334444), np.array([True]), opsel=0b011).d[0] == 0x3333


# ---- conversions, frexp, ldexp, rounding ---------------------------------------------------------------------------

def test_conversions() -> None:
    x = f32(1.9, -1.9, 3e9, -3e9, np.nan, np.inf, -np.inf, -0.5)
    assert V("v_cvt_i32_f32", x).d.view(np.int32).tolist() == [1, -1, 2 ** 31 - 1, -(2 ** 31), 0, 2 ** 31 - 1,
                                                                 -(2 ** 31), 0]
    assert V("v_cvt_u32_f32", x).d.tolist() == [1, 0, 3000000000, 0, 0, 2 ** 32 - 1, 0, 0]
    assert asf(V("v_cvt_f32_i32", U32(2 ** 24 + 1, 0xFFFFFFFF, 2 ** 24 + 3)).d).tolist() == [2 ** 24, -1.0, 2 ** 24 + 4]
    assert asf(V("v_cvt_f32_u32", U32(0xFFFFFFFF)).d)[0] == 2.0 ** 32
    h = V("v_cvt_f16_f32", f32(65520.0, 65519.0, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 2.0 ** -25, 2.0 ** -24 * 1.5, -0.0)).d
    assert h.tolist() == [0x7C00, 0x7BFF, 0x3C00, 0x3C02, 0x0000, 0x0002, 0x8000]  # RNE, overflow, denormals
    assert V("v_cvt_f16_f32", U32(0x7F800001)).d[0] & 0x7E00 == 0x7E00  # NaN stays NaN, quieted
    assert asf(V("v_cvt_f32_f16", U32(0x0001, 0xFC00)).d).tolist() == [2.0 ** -24, -np.inf]
    assert [asf(V(f"v_cvt_f32_ubyte{i}", U32(0x04030201)).d)[0] for i in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert V("v_cvt_pk_rtz_f16_f32", f32(1 + 2 ** -11 + 2 ** -20), f32(70000.0)).d[0] == 0x7BFF << 16 | 0x3C00
    assert V("v_cvt_floor_i32_f32", f32(-1.5)).d.view(np.int32)[0] == -2
    assert V("v_cvt_i16_f16", h16(-40000 / 2)).d[0] == 0xB1E0 and V("v_cvt_i16_f16", h16(65504.0)).d[0] == 0x7FFF


def test_frexp_ldexp_rndne_fract() -> None:
    x = f32(8.0, -0.75, 2.0 ** -149, np.inf, np.nan, 0.0)
    assert asf(V("v_frexp_mant_f32", x).d)[:3].tolist() == [0.5, -0.75, 0.5]
    assert V("v_frexp_mant_f32", x).d[3] == 0x7F800000
    assert V("v_frexp_exp_i32_f32", x).d.view(np.int32).tolist() == [4, 0, -148, 0, 0, 0]
    e = U32(3, 0xFFFFFF80, 200, 0xFFFFFF00, 1)
    got = asf(V("v_ldexp_f32", f32(1.5, 1.5, 1.0, 1.0, 3.4e38), e).d).tolist()
    assert got == [12.0, np.float32(1.5 * 2.0 ** -128), np.inf, 0.0, np.inf]
    big = float(np.float32(1e20))
    assert asf(V("v_rndne_f32", f32(2.5, 3.5, -2.5, -0.4, big)).d).tolist() == [2.0, 4.0, -2.0, -0.0, big]
    assert V("v_rndne_f32", f32(-0.4)).d[0] == 0x80000000
    assert asf(V("v_fract_f32", f32(1.25, -0.25, -1e-10)).d).tolist() == [0.25, 0.75, np.float32(1) - 2 ** -24]
    assert ash(V("v_ldexp_f16", h16(1.0), U32(0xFFF0)).d)[0] == 2.0 ** -16  # i16 exponent from the low half


def test_transcendentals_against_f64_and_specials() -> None:
    rng = np.random.default_rng(4)
    x = (rng.random(5000) * 40 - 20).astype(np.float32)
    pos = np.abs(x) + np.float32(1e-3)
    ref = {"v_exp_f32": (x, np.exp2), "v_log_f32": (pos, np.log2), "v_rcp_f32": (x, lambda v: 1 / v),
           "v_rsq_f32": (pos, lambda v: 1 / np.sqrt(v)), "v_sqrt_f32": (pos, np.sqrt),
           "v_sin_f32": (x, lambda v: np.sin(2 * np.pi * (v - np.floor(v)))),
           "v_cos_f32": (x, lambda v: np.cos(2 * np.pi * (v - np.floor(v))))}
    for op, (inp, fn) in ref.items():  # 0.5 ulp from f64 (the hardware allows about 1 ulp)
        want = fn(inp.astype(np.float64))
        got = asf(V(op, inp.view(np.uint32)).d).astype(np.float64)
        assert (np.abs(got - want) <= np.spacing(np.abs(want).astype(np.float32)) / 2 + 1e-300).all(), op
    s = lambda op, *v: asf(V(op, f32(*v)).d).tolist()  # noqa: E731
    assert s("v_exp_f32", -np.inf, np.inf, 0.0, -130.0) == [0.0, np.inf, 1.0, 0.0]  # no denormal results
    assert s("v_log_f32", 0.0, -0.0, 1.0, np.inf)[:4] == [-np.inf, -np.inf, 0.0, np.inf]
    assert np.isnan(s("v_log_f32", -1.0)[0]) and s("v_log_f32", 2.0 ** -140)[0] == -np.inf  # denormal in -> 0
    assert s("v_rcp_f32", 0.0, -0.0, np.inf, 4.0) == [np.inf, -np.inf, 0.0, 0.25]
    assert s("v_rsq_f32", 0.0, 4.0, np.inf) == [np.inf, 0.5, 0.0] and np.isnan(s("v_rsq_f32", -1.0)[0])
    assert V("v_sqrt_f32", f32(-0.0)).d[0] == 0x80000000 and np.isnan(s("v_sqrt_f32", -4.0)[0])
    assert s("v_sin_f32", 0.25, 132000.25)[0] == 1.0 and abs(s("v_sin_f32", 132000.25)[0] - 1.0) < 1e-6
    assert V("v_sin_f32", f32(-0.0)).d[0] == 0x80000000 and np.isnan(s("v_sin_f32", np.inf)[0])
    assert ash(V("v_rcp_f16", h16(4.0)).d)[0] == 0.25


# ---- division helpers (hardware facts; the whole sequence is in test_alu_div.py) ----------------------------------

def test_div_scale_fmas_fixup_cases() -> None:
    r = V("v_div_scale_f32", f32(1.0), f32(4.0), f32(1.0))
    assert r.d[0] == fbits(1.0) and not r.mask[0]
    r = V("v_div_scale_f32", f32(1.0), f32(0.0), f32(1.0))
    assert np.isnan(asf(r.d)[0]) and r.mask[0]  # zero denominator: NaN, VCC set
    r = V("v_div_scale_f32", f32(1.0), f32(1.0), U32(0x7F7FFFFF))  # N/D near max: denominator scaled, VCC
    assert asf(r.d)[0] == 2.0 ** 64 and r.mask[0]
    r = V("v_div_scale_f32", U32(0x00800000), f32(1.0), U32(0x00800000))  # tiny numerator: scaled, VCC
    assert asf(r.d)[0] == 2.0 ** -126 * 2.0 ** 64 and r.mask[0]
    r = V("v_div_scale_f32", U32(1), U32(1), f32(1.0), mode=FloatMode(flush32=True))  # flushed denormal = zero
    assert np.isnan(asf(r.d)[0]) and r.mask[0]
    r = V("v_div_scale_f32", U32(1), U32(1), f32(2.0 ** -40))  # kept denormal denominator: both scaled by 2^64
    assert asf(r.d)[0] == np.float32(2.0 ** -149 * 2.0 ** 64) and not r.mask[0]
    r = V("v_div_scale_f32", f32(1.0), U32(0x7F000000), f32(1.0))  # quotient would be denormal
    assert asf(r.d)[0] == 1.0 and r.mask[0]
    vcc = np.array([False, True, True, False])
    got = asf(V("v_div_fmas_f32", f32(2, 1, 2, 1), f32(3, 1, 3, 1), f32(1, 2, 1, 1), vcc).d).tolist()
    assert got == [7.0, 3.0 * 2.0 ** 64, 7.0 * 2.0 ** -64, 2.0]
    fix = lambda q, d, n: V("v_div_fixup_f32", f32(q), f32(d), f32(n)).d[0]  # noqa: E731
    assert fix(3.0, -2.0, 6.0) == fbits(-3.0) and fix(1.0, 0.0, -1.0) == 0xFF800000
    assert fix(1.0, 0.0, 0.0) == 0xFFC00000 and fix(0.0, np.inf, np.inf) == 0xFFC00000
    assert fix(0.0, -np.inf, 1.0) == 0x80000000 and fix(np.nan, 1.0, 1.0) == 0x7F800000
    assert fix(1.0, 1.0, np.nan) == 0x7FC00000 and fix(1.0, 2.0, 0.0) == 0


# ---- mixed precision and packed ------------------------------------------------------------------------------------

def test_fma_mix_selects_f16_or_f32_sources() -> None:
    pair = U32(h16(3.0)[0] << 16 | h16(2.0)[0])
    got = V("v_fma_mix_f32", pair, f32(10.0), pair, opsel_hi=0b101, opsel=0b100, neg=0b001).d  # -2*10 + 3
    assert asf(got)[0] == -17.0
    assert asf(V("v_fma_mix_f32", pair, f32(-10.0), f32(0.5), opsel_hi=0b001, neg_hi=0b010).d)[0] == 20.5  # abs
    lo = V("v_fma_mixlo_f16", f32(1.0), f32(2.0 ** -12), f32(2048.0))
    assert ash(lo.d)[0] == 2048.0 and not lo.d16_hi
    assert V("v_fma_mixhi_f16", f32(1.0), f32(1.0), f32(1.0)).d16_hi


def test_packed_16bit_ops() -> None:
    a = U32(h16(2.0)[0] << 16 | h16(1.0)[0])
    b = U32(h16(20.0)[0] << 16 | h16(10.0)[0])
    r = V("v_pk_add_f16", a, b).d[0]
    assert ash(np.array([r]))[0] == 11.0 and ash(np.array([r >> 16]))[0] == 22.0
    r = V("v_pk_add_f16", a, b, opsel=0b01, opsel_hi=0b10, neg_hi=0b01).d[0]  # lo: 2+10, hi: -1+20
    assert ash(np.array([r]))[0] == 12.0 and ash(np.array([r >> 16]))[0] == 19.0
    assert V("v_pk_add_u16", U32(0xFFFF0001), U32(0x00020002), clamp=1).d[0] == 0xFFFF0003
    assert V("v_pk_add_u16", U32(0xFFFF0001), U32(0x00020002)).d[0] == 0x00010003


# ---- integer ops -------------------------------------------------------------------------------------------------

def test_integer_add_sub_carry_and_clamp() -> None:
    r = V("v_add_co_u32", U32(0xFFFFFFFF, 5), U32(1, 6))
    assert r.d.tolist() == [0, 11] and r.mask.tolist() == [True, False]
    r = V("v_add_co_ci_u32", U32(0xFFFFFFFF, 5), U32(0, 6), np.array([True, True]))
    assert r.d.tolist() == [0, 12] and r.mask.tolist() == [True, False]
    r = V("v_sub_co_ci_u32", U32(5, 5), U32(5, 4), np.array([True, True]))
    assert r.d.tolist() == [0xFFFFFFFF, 0] and r.mask.tolist() == [True, False]
    r = V("v_subrev_co_ci_u32", U32(1), U32(0), np.array([False]))
    assert r.d[0] == 0xFFFFFFFF and r.mask[0]
    assert V("v_add_nc_u32", U32(0xFFFFFFFF), U32(2)).d[0] == 1
    assert V("v_add_nc_u32", U32(0xFFFFFFFF), U32(2), clamp=1).d[0] == 0xFFFFFFFF
    assert V("v_sub_nc_u32", U32(1), U32(2), clamp=1).d[0] == 0 and V("v_subrev_nc_u32", U32(1), U32(2)).d[0] == 1
    assert V("v_add_nc_i32", U32(0x7FFFFFFF), U32(1), clamp=1).d[0] == 0x7FFFFFFF
    assert V("v_sub_nc_u16", U32(1), U32(2)).d[0] == 0xFFFF and V("v_add_nc_u16", U32(0xFFFF), U32(3)).d[0] == 2
    assert V("v_mul_lo_u16", U32(0x1234), U32(0x100)).d[0] == 0x3400


def test_integer_multiply_family() -> None:
    a, b = U32(0xFFFFFFFF, 0x80000000, 123456789), U32(0xFFFFFFFF, 2, 987654321)
    assert V("v_mul_lo_u32", a, b).d.tolist() == [1, 0, (123456789 * 987654321) & 0xFFFFFFFF]
    assert V("v_mul_hi_u32", a, b).d.tolist() == [0xFFFFFFFE, 1, (123456789 * 987654321) >> 32]
    assert V("v_mul_hi_i32", a, b).d.tolist() == [0, 0xFFFFFFFF, (123456789 * 987654321) >> 32]
    assert V("v_mul_i32_i24", U32(0xFFFFFF), U32(0x1000003)).d.view(np.int32)[0] == -3  # low 24 bits, signed
    assert V("v_mul_u32_u24", U32(0x1FFFFFF), U32(2)).d[0] == 0x1FFFFFE
    assert V("v_mad_u32_u24", U32(0x1000002), U32(3), U32(10)).d[0] == 16
    r = V("v_mad_u64_u32", U32(0xFFFFFFFF), U32(0xFFFFFFFF), np.array([2 ** 64 - 1], np.uint64))
    assert r.d.dtype == np.uint64 and int(r.d[0]) == ((2 ** 32 - 1) ** 2 + 2 ** 64 - 1) & (2 ** 64 - 1) and r.mask[0]
    r = V("v_mad_co_u64_u32", U32(3), U32(4), np.array([5], np.uint64))
    assert int(r.d[0]) == 17 and not r.mask[0]
    r = V("v_mad_i64_i32", U32(0xFFFFFFFF), U32(5), np.array([2], np.uint64))
    assert int(r.d[0]) == 2 ** 64 - 3 and r.mask[0]  # -3: bit 64 of the 65-bit result is the sign


def test_bit_ops_and_shifts() -> None:
    assert V("v_lshlrev_b32", U32(33), U32(1)).d[0] == 2  # shift count mod 32
    assert V("v_lshrrev_b32", U32(4), U32(0x80000000)).d[0] == 0x08000000
    assert V("v_ashrrev_i32", U32(4), U32(0x80000000)).d[0] == 0xF8000000
    r = V("v_lshlrev_b64", U32(2, 33, 64), np.array([0x8000000000000001, 1, 1], np.uint64)).d
    assert r.dtype == np.uint64 and r.tolist() == [4, 2 ** 33, 1]
    assert V("v_lshrrev_b16", U32(4), U32(0xFFFF8000)).d[0] == 0x0800
    assert V("v_ashrrev_i16", U32(4), U32(0x8000)).d[0] == 0xF800
    assert V("v_bfe_u32", U32(0xDEADBEEF), U32(0), U32(31)).d[0] == 0x5EADBEEF
    assert V("v_bfe_u32", U32(0xDEADBEEF), U32(8), U32(0)).d[0] == 0
    assert V("v_bfe_i32", U32(0x00000F00), U32(8), U32(4)).d[0] == 0xFFFFFFFF
    assert V("v_bfe_i32", U32(0x00000700), U32(8), U32(4)).d[0] == 7
    assert V("v_bfi_b32", U32(0xFF00FF00), U32(0x12345678), U32(0xABCDEF01)).d[0] == 0x12CD5601
    assert V("v_alignbit_b32", U32(0x12), U32(0x34), U32(4)).d[0] == 0x20000003
    assert V("v_perm_b32", U32(0x11223344), U32(0x55667788), U32(0x0C0D0007)).d[0] == 0x00FF8811
    assert V("v_bfrev_b32", U32(1, 0x80000000, 0xF0)).d.tolist() == [0x80000000, 1, 0x0F000000]
    assert V("v_lshl_or_b32", U32(1), U32(4), U32(1)).d[0] == 0x11
    assert V("v_lshl_add_u32", U32(1), U32(36), U32(1)).d[0] == 17
    assert V("v_add_lshl_u32", U32(1), U32(2), U32(3)).d[0] == 24
    assert V("v_add3_u32", U32(0xFFFFFFFF), U32(1), U32(5)).d[0] == 5
    assert V("v_xad_u32", U32(0xF0), U32(0xFF), U32(1)).d[0] == 0x10
    assert V("v_and_or_b32", U32(0xF0), U32(0x3C), U32(1)).d[0] == 0x31
    assert V("v_or3_b32", U32(1), U32(2), U32(4)).d[0] == 7 and V("v_xnor_b32", U32(0), U32(0)).d[0] == 0xFFFFFFFF
    assert V("v_not_b32", U32(0)).d[0] == 0xFFFFFFFF and V("v_and_b16", U32(0xFF0F), U32(0x0FF0)).d[0] == 0x0F00
    assert V("v_min3_i32", U32(5, 0xFFFFFFFF), U32(3, 0), U32(4, 1)).d.tolist() == [3, 0xFFFFFFFF]
    assert V("v_max_u32", U32(0xFFFFFFFF), U32(1)).d[0] == 0xFFFFFFFF
    assert V("v_max_i32", U32(0xFFFFFFFF), U32(1)).d[0] == 1
    assert V("v_clz_i32_u32", U32(0, 1, 0x80000000)).d.view(np.int32).tolist() == [-1, 31, 0]
    assert V("v_ctz_i32_b32", U32(0, 8)).d.view(np.int32).tolist() == [-1, 3]
    assert V("v_cls_i32", U32(0, 0xFFFFFFFF, 1, 0xC0000000)).d.view(np.int32).tolist() == [-1, -1, 31, 2]
    assert [S("s_cls_i32", x).d for x in (1, 0xC0000000, 0)] == [31, 2, 0xFFFFFFFF]
    assert V("v_mbcnt_lo_u32_b32", U32(*[0xFFFFFFFF] * 4), U32(*[1] * 4)).d.tolist() == [1, 2, 3, 4]
    assert V("v_cndmask_b32", U32(1, 1), U32(2, 2), np.array([False, True])).d.tolist() == [1, 2]
    assert V("v_mov_b32", U32(0x7F800001)).d[0] == 0x7F800001  # moves keep sNaN bits


# ---- SALU --------------------------------------------------------------------------------------------------------

def test_scalar_add_sub_carry_chain() -> None:
    lo = S("s_add_u32", 0xFFFFFFFF, 2)
    assert (lo.d, lo.scc) == (1, True)
    hi = S("s_addc_u32", 0x10, 0x20, scc=lo.scc)
    assert (hi.d, hi.scc) == (0x31, False)
    assert S("s_addc_u32", 0xFFFFFFFF, 0, scc=True).scc is True
    assert (S("s_sub_u32", 1, 2).d, S("s_sub_u32", 1, 2).scc) == (0xFFFFFFFF, True)
    assert S("s_add_i32", 0x7FFFFFFF, 1).scc and not S("s_add_i32", 0xFFFFFFFF, 1).scc
    assert S("s_add_co_i32", 0x7FFFFFFF, 1).d == 0x80000000 and S("s_sub_co_i32", 0x80000000, 1).scc
    assert S("s_sub_i32", 5, 7).d == 0xFFFFFFFE and not S("s_sub_i32", 5, 7).scc
    r = S("s_add_nc_u64", 2 ** 64 - 1, 3, scc=True)
    assert (r.d, r.scc) == (2, None)


def test_scalar_logic_shift_select_compare() -> None:
    assert (S("s_and_b32", 0xF0, 0x0F).d, S("s_and_b32", 0xF0, 0x0F).scc) == (0, False)
    assert (S("s_and_not1_b32", 0xFF, 0x0F).d, S("s_and_not1_b32", 0xFF, 0x0F).scc) == (0xF0, True)
    r = S("s_lshl_b64", 0x8000000000000001, 65)
    assert (r.d, r.scc) == (2, True)
    assert S("s_lshl_b64", 0x8000000000000000, 1).scc is False
    assert S("s_ashr_i32", 0x80000000, 31).d == 0xFFFFFFFF and S("s_lshr_b32", 0x80000000, 31).d == 1
    assert S("s_cselect_b32", 1, 2, scc=True).d == 1 and S("s_cselect_b32", 1, 2).d == 2
    assert S("s_cselect_b32", 1, 2).scc is None and S("s_mov_b32", 7).scc is None
    assert S("s_cmp_gt_i32", 1, 0xFFFFFFFF).scc and not S("s_cmp_lt_u32", 0xFFFFFFFF, 1).scc
    assert S("s_cmp_eq_u32", 3, 3).scc and S("s_cmp_lg_u32", 3, 4).scc and S("s_cmp_lg_u32", 3, 4).d is None
    assert S("s_cmpk_lt_i32", 0xFFFFFFFE, simm16=0xFFFF).scc  # -2 < signext(0xffff) = -1
    assert not S("s_cmpk_lt_u32", 0xFFFFFFFE, simm16=0xFFFF).scc  # zero-extended: 0xfffffffe < 0xffff is false
    assert S("s_cmpk_gt_i32", 5, simm16=4).scc and S("s_cmpk_lg_i32", 5, simm16=4).scc
    assert S("s_min_i32", 0xFFFFFFFF, 1).d == 0xFFFFFFFF and S("s_min_i32", 0xFFFFFFFF, 1).scc
    assert S("s_mul_i32", 0x10000, 0x10000).d == 0 and S("s_mul_hi_i32", 0xFFFFFFFF, 0xFFFFFFFF).d == 0
    assert S("s_mul_hi_i32", 0x80000000, 2).d == 0xFFFFFFFF
    assert S("s_bfe_u32", 0xABCD, 4 | (8 << 16)).d == 0xBC and S("s_bfe_i32", 0xF0, 4 | (4 << 16)).d == 0xFFFFFFFF
    assert (S("s_bcnt1_i32_b32", 0xF0F0).d, S("s_ctz_i32_b32", 0).d, S("s_ff1_i32_b32", 8).d) == (8, 0xFFFFFFFF, 3)
    assert S("s_brev_b32", 1).d == 0x80000000 and S("s_flbit_i32_b32", 1).d == 31


def test_scalar_sopk_and_saveexec() -> None:
    r = S("s_addk_i32", 0x7FFFFFFF, simm16=1)
    assert (r.d, r.scc) == (0x80000000, True)
    assert S("s_addk_i32", 10, simm16=0xFFFF).d == 9 and S("s_addk_co_i32", 10, simm16=0xFFFF).d == 9
    assert S("s_mulk_i32", 3, simm16=0xFFFE).d == 0xFFFFFFFA and S("s_movk_i32", simm16=0x8000).d == 0xFFFF8000
    assert S("s_cmovk_i32", simm16=1).d is None and S("s_cmov_b32", 5, scc=True).d == 5
    r = S("s_and_saveexec_b32", 0x0000FFFF, exec=0xFF00FF00)
    assert (r.d, r.exec, r.scc) == (0xFF00FF00, 0x0000FF00, True)
    r = S("s_and_not1_saveexec_b32", 0x0000FFFF, exec=0xFFFFFFFF)
    assert (r.d, r.exec, r.scc) == (0xFFFFFFFF, 0, False)
    r = S("s_or_saveexec_b32", 0x1, exec=0x10)
    assert (r.d, r.exec) == (0x10, 0x11)
    r = S("s_and_saveexec_b64", 2 ** 64 - 1, exec=2 ** 40, wave64=True)
    assert (r.d, r.exec, r.scc) == (2 ** 40, 2 ** 40, True)
    r = S("s_and_not1_wrexec_b32", 0xFF, exec=0x0F)
    assert (r.d, r.exec) == (0xF0, 0xF0)


def test_scalar_float_ops_gfx12() -> None:
    assert S("s_add_f32", fbits(1.5), fbits(2.25)).d == fbits(3.75)
    assert S("s_mul_f32", fbits(3.0), fbits(-0.5)).d == fbits(-1.5) and S("s_mul_f32", 1, 1).scc is None
    assert S("s_max_num_f32", 0x7FC00000, fbits(1.0)).d == fbits(1.0)
    assert S("s_cmp_u_f32", 0x7FC00000, fbits(1.0)).scc and not S("s_cmp_u_f32", 0, 0).scc
    assert S("s_cmp_lt_f32", fbits(1.0), fbits(2.0)).scc and S("s_cmp_lt_f32", 0, 0).d is None
    assert S("s_cvt_f32_i32", 0xFFFFFFFF).d == fbits(-1.0) and S("s_cvt_f32_u32", 0xFFFFFFFF).d == fbits(2.0 ** 32)
    assert S("s_cvt_f16_f32", fbits(1.0)).d == 0x3C00 and S("s_cvt_hi_f32_f16", 0x3C000000).d == fbits(1.0)
    assert S("s_fmac_f32", fbits(2.0), fbits(3.0), fbits(1.0)).d == fbits(7.0)


def test_float_mode_from_descriptor() -> None:
    gfx11 = FloatMode.from_rsrc1(0x00AF0000 | (0xF0 << 12), "gfx1100")  # our descriptors: FLOAT_MODE 0xF0, IEEE, DX10
    assert gfx11 == FloatMode(flush32=False, flush16_64=False, ieee=True, dx10_clamp=True)
    assert FloatMode.from_rsrc1(0xF0 << 12, "gfx1201") == FloatMode(ieee=False, dx10_clamp=True)
    assert FloatMode.from_rsrc1(0xC0 << 12, "gfx1100").flush32  # FLOAT_DENORM_MODE_32 = 0
