"""alu.compile_vector / alu.compile_scalar (the executor's bound fast paths) against alu.vector / alu.scalar (the
reference): every op of both tables, random register bits salted with NaNs (quiet, signalling, with payloads), infs,
zeros of both signs and denormals, with and without modifiers and in every float mode, must give the same bits."""
from __future__ import annotations

import numpy as np
import pytest

from emu.amd.isa import alu, alu_sops, alu_vops
from emu.amd.isa.alu import FloatMode
from emu.amd.isa.instr import Instr

F32_SPECIAL = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FA00000,
               0xFFB12345, 0x7FC0BEEF, 0x00000001, 0x807FFFFF, 0x00400000, 0x3F800000, 0xBF800000, 0x7F7FFFFF,
               0x00800000, 0x3F000000, 0x4F800000, 0xCF000000, 0x00000002, 0xFFFFFFFF, 0x80000001]
F16_SPECIAL = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x7D00, 0xFD55, 0x0001, 0x83FF, 0x0200,
               0x3C00, 0xBC00, 0x7BFF, 0x0400, 0x3800, 0xFFFF]
F64_SPECIAL = [0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000, 0x7FF0000000000001,
               0xFFF4000000000000, 1, 0x800FFFFFFFFFFFFF, 0x3FF0000000000000, 0xBFF0000000000000, 0x7FEFFFFFFFFFFFFF,
               0x0010000000000000, (1 << 64) - 1]
MODES = {"default": FloatMode(), "flush": FloatMode(flush32=True, flush16_64=True), "gfx12": FloatMode(ieee=False),
         "no_dx10": FloatMode(ieee=False, dx10_clamp=False)}


def _raw(rng: np.random.Generator, t: str, lanes: int, ordinary: bool) -> np.ndarray:
    """Register bits for a source of type t, as the executor hands them over. `ordinary`: finite normal floats
    and small integers only (the hand-written paths' own territory), else a mix with every special value."""
    if t == "mask":
        return rng.random(lanes) < 0.5
    if t.endswith("64"):
        if ordinary:
            vals = rng.standard_normal(lanes) * 2.0 ** rng.integers(-30, 30, lanes)
            return vals.view(np.uint64) if t == "f64" else rng.integers(0, 1 << 40, lanes, dtype=np.uint64)
        out = rng.integers(0, 1 << 63, lanes, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, lanes).astype(
            np.uint64)
        pick = rng.random(lanes) < 0.5
        out[pick] = rng.choice(np.array(F64_SPECIAL, np.uint64), int(pick.sum()))
        return out
    if ordinary:
        h = rng.standard_normal(lanes).astype(np.float16).view(np.uint16).astype(np.uint32)
        lo = rng.standard_normal(lanes).astype(np.float16).view(np.uint16).astype(np.uint32)
        f = (rng.standard_normal(lanes) * 2.0 ** rng.integers(-8, 8, lanes)).astype(np.float32).view(np.uint32)
        ints = rng.integers(0, 70, lanes, dtype=np.uint32)
        if t.endswith("16"):
            return lo | (h << np.uint32(16)) if t[0] == "f" else ints | (ints << np.uint32(16))
        return f if t[0] in "fb" else ints
    out = rng.integers(0, 1 << 32, lanes, dtype=np.uint64).astype(np.uint32)
    pick = rng.random(lanes) < 0.4
    out[pick] = rng.choice(np.array(F32_SPECIAL, np.uint32), int(pick.sum()))
    half = rng.random(lanes) < 0.4
    specials16 = rng.choice(np.array(F16_SPECIAL, np.uint32), (2, lanes))
    out[half] = specials16[0][half] | (specials16[1][half] << np.uint32(16))
    small = rng.random(lanes) < 0.15
    out[small] = rng.integers(0, 40, int(small.sum()))
    return out


def _fields(rng: np.random.Generator, spec: alu_vops.VOp, kind: str) -> dict:
    n = len(spec.src)
    if kind == "plain":
        return {}
    if kind == "opsel":
        return {"opsel": int(rng.integers(0, 16))}
    if kind == "negabs":
        return {"neg": int(rng.integers(0, 1 << n)), "abs": int(rng.integers(0, 1 << n))}
    if kind == "clamp":
        return {"clamp": 1, "opsel": int(rng.integers(0, 16))}
    if kind == "omod":
        return {"omod": int(rng.integers(1, 4)), "clamp": int(rng.integers(0, 2))}
    return {"opsel": int(rng.integers(0, 8)), "opsel_hi": int(rng.integers(0, 8)), "neg": int(rng.integers(0, 8)),
            "neg_hi": int(rng.integers(0, 8))}


def _same_v(ref: alu.VResult, got: alu.VResult, what: str) -> None:
    assert (ref.d is None) == (got.d is None), what
    if ref.d is not None:
        assert got.d.dtype == ref.d.dtype and got.d.shape == ref.d.shape, what
        bad = np.nonzero(got.d != ref.d)[0]
        assert not len(bad), f"{what}: lanes {bad[:4]} give {got.d[bad[:4]]}, the reference {ref.d[bad[:4]]}"
    assert (ref.mask is None) == (got.mask is None), what
    if ref.mask is not None:
        assert got.mask.dtype == np.bool_ and np.array_equal(got.mask, ref.mask), what
    assert bool(got.d16_hi) == bool(ref.d16_hi), what


def _check_vector(op: str, fields: dict, mode: FloatMode, src: list, what: str) -> None:
    ins = Instr(op=op, enc="VOP3", size=8, fields=fields)
    keep = [s.copy() for s in src]
    with np.errstate(all="ignore"):
        try:
            ref = alu.vector(ins, [s.copy() for s in src], mode)
        except Exception as e:  # the bound form must fail the same way
            with pytest.raises(type(e)):
                alu.compile_vector(ins, mode)(src)
            return
        got = alu.compile_vector(ins, mode)(src)
    for a, b in zip(src, keep):
        assert np.array_equal(a, b), f"{what}: the bound form changed a source"
    _same_v(ref, got, what)


VOPS = sorted(alu_vops.TABLE)


@pytest.mark.parametrize("chunk", range(8))
def test_every_vector_op_matches_the_reference(chunk: int) -> None:
    rng = np.random.default_rng(1000 + chunk)
    for op in VOPS[chunk::8]:
        spec = alu_vops.TABLE[op]
        kinds = ["packed"] if spec.packed else ["plain", "opsel", "negabs", "clamp", "omod"]
        for kind in kinds:
            for mname, mode in MODES.items():
                if kind in ("negabs", "omod", "opsel") and mname == "no_dx10":
                    continue
                for ordinary in (True, False):
                    lanes = 64 if rng.random() < 0.2 else 32
                    src = [_raw(rng, t, lanes, ordinary) for t in spec.src]
                    fields = _fields(rng, spec, kind)
                    _check_vector(op, fields, mode, src, f"{op} {fields} mode={mname} ordinary={ordinary}")


def test_the_hot_ops_agree_on_many_draws_and_the_vopd_spelling() -> None:
    """The hand-written paths, many times over: more draws, both wave sizes, the v_dual_ names."""
    rng = np.random.default_rng(7)
    hot = ["v_fmac_f32", "v_fma_f32", "v_fmamk_f32", "v_fmaak_f32", "v_add_f32", "v_sub_f32", "v_subrev_f32",
           "v_mul_f32", "v_add_f16", "v_mul_f16", "v_sub_f16", "v_max_f32", "v_min_f32", "v_max_num_f32",
           "v_min_num_f32", "v_max_f16", "v_max_num_f16", "v_min_num_f16", "v_add_co_u32", "v_add_co_ci_u32",
           "v_sub_co_ci_u32", "v_sub_co_u32", "v_add_nc_u32", "v_lshlrev_b32", "v_lshlrev_b64", "v_ashrrev_i32",
           "v_cndmask_b32", "v_cmp_gt_i32", "v_cmp_lt_u32", "v_cmp_lt_f32", "v_cmp_neq_f32", "v_cmpx_gt_i32",
           "v_mov_b32", "v_and_b32", "v_or_b32", "v_xor_b32", "v_lshl_or_b32", "v_lshl_add_u32", "v_add3_u32",
           "v_mul_lo_u32", "v_mul_hi_u32", "v_mad_u64_u32", "v_mad_co_u64_u32", "v_bfe_u32", "v_cvt_f32_f16",
           "v_cvt_f16_f32", "v_cvt_f32_u32", "v_cvt_f32_i32", "v_max_i32", "v_min_u32"]
    for op in hot:
        spec = alu_vops.TABLE[op]
        for i in range(12):
            lanes = (32, 64)[i % 2]
            src = [_raw(rng, t, lanes, i % 3 != 2) for t in spec.src]
            fields = {} if i < 8 else {"opsel": int(rng.integers(0, 16))}
            for mname in ("default", "gfx12"):
                _check_vector(op, fields, MODES[mname], src, f"{op} {fields} {mname} draw {i}")
        _check_vector("v_dual_" + op[2:], {}, MODES["default"], [_raw(rng, t, 32, True) for t in spec.src],
                      f"v_dual spelling of {op}")


def test_fma_midpoints_take_the_exact_path() -> None:
    """a*b + c whose f64 sum lands exactly on an f32 rounding midpoint: rounding the f64 sum again would be wrong
    (1 + 2**-11 + 2**-24 + 2**-80 rounds up in f32, 1 + 2**-11 + 2**-24 ties to even downwards)."""
    a = np.full(32, 1 + 2.0 ** -12, np.float32)
    c = np.full(32, 2.0 ** -80, np.float32)
    c[::3] = -(2.0 ** -80)
    c[1::5] = np.float32(0.375)
    for op in ("v_fmac_f32", "v_fma_f32"):
        got = alu.compile_vector(Instr(op=op, enc="VOP2", size=4), None)([a.view(np.uint32), a.view(np.uint32),
                                                                           c.view(np.uint32)])
        ref = alu.vector(Instr(op=op, enc="VOP2", size=4), [a.view(np.uint32), a.view(np.uint32), c.view(np.uint32)])
        _same_v(ref, got, op)
        assert got.d.view(np.float32)[2] == np.float32(1 + 2.0 ** -11 + 2.0 ** -23)  # rounded up, once
        assert got.d.view(np.float32)[0] == np.float32(1 + 2.0 ** -11)  # just below the midpoint: down


S_EDGE = [0, 1, 2, 31, 32, 63, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF, 0x8000, 0x12345678, 0x3F800000,
          0x7FC00000, 0xFF800000, 0x00000001, 0x80000001]


def _sval(rng: np.random.Generator, t: str) -> int:
    if rng.random() < 0.5:
        v = int(rng.choice(S_EDGE))
        return v | (int(rng.choice(S_EDGE)) << 32) if t.endswith("64") else v
    return int(rng.integers(0, 1 << (64 if t.endswith("64") else 32), dtype=np.uint64))


SOPS = sorted(set(alu_sops.TABLE) | set(alu_sops.FLOAT_OPS))


@pytest.mark.parametrize("op", SOPS)
def test_every_scalar_op_matches_the_reference(op: str) -> None:
    rng = np.random.default_rng(abs(hash(op)) % (1 << 32))
    n = alu.source_count(op)
    types = [alu.operand_type(op, i) for i in range(n)]
    for i in range(24):
        wave64 = bool(i % 2)
        mode = (FloatMode(), FloatMode(ieee=False), FloatMode(flush32=True, flush16_64=True))[i % 3]
        ins = Instr(op=op, enc="SOP2", size=4, fields={"simm16": int(rng.integers(0, 1 << 16))})
        src = [_sval(rng, t) for t in types]
        scc, ex = bool(rng.integers(0, 2)), _sval(rng, "b64" if wave64 else "b32")
        with np.errstate(all="ignore"):
            ref = alu.scalar(ins, list(src), scc, ex, wave64, mode)
            got = alu.compile_scalar(ins, wave64, mode)(list(src), scc, ex)
        what = f"{op} src={[hex(s) for s in src]} scc={scc} exec={ex:#x} wave64={wave64}"
        assert (got.d, got.scc, got.exec) == (ref.d, ref.scc, ref.exec), what
        assert type(got.d) in (int, type(None)) and type(got.scc) in (bool, type(None)), what


def test_bound_forms_report_unknown_ops_like_the_reference() -> None:
    with pytest.raises(NotImplementedError, match="v_bogus_f32"):
        alu.compile_vector(Instr(op="v_bogus_f32", enc="VOP2", size=4))
    with pytest.raises(NotImplementedError, match="s_bogus_b32"):
        alu.compile_scalar(Instr(op="s_bogus_b32", enc="SOP2", size=4), False)


def test_min_max_of_signed_zeros_without_nans() -> None:
    """The NaN-free fast path of v_max/v_min: max(+0, -0) is +0 and min(+0, -0) is -0 in either order, like the
    reference's GT_NEG_ZERO / LT_NEG_ZERO rule (the random draws rarely meet two zeros without a NaN lane)."""
    a = np.array([0.0, -0.0, -0.0, 0.0, 1.5, -2.0, -0.0, 3.0] * 4, np.float32).view(np.uint32)
    b = np.array([-0.0, 0.0, -0.0, 0.0, 1.5, 0.0, 7.0, -0.0] * 4, np.float32).view(np.uint32)
    for op in ("v_max_f32", "v_min_f32", "v_max_num_f32", "v_min_num_f32", "v_maximum_f32", "v_minimum_f32"):
        for mode in MODES.values():
            _check_vector(op, {}, mode, [a, b], f"{op} on signed zeros")
    got = alu.compile_vector(Instr(op="v_max_f32", enc="VOP2", size=4))([a, b]).d
    assert list(got[:4]) == [0, 0, 0x80000000, 0]
    h = np.array([0x0000, 0x8000, 0x8000, 0x3C00] * 8, np.uint32)
    g = np.array([0x8000, 0x0000, 0x8000, 0xBC00] * 8, np.uint32)
    for op in ("v_max_f16", "v_min_f16", "v_max_num_f16", "v_min_num_f16"):
        _check_vector(op, {}, MODES["default"], [h, g], f"{op} on signed zeros")
