"""RDNA3 (gfx11) / RDNA4 (gfx12) scalar and vector ALU semantics, bit-exact, vectorized over lanes with numpy.

The wave executor (wave.py) reads the operands, calls `vector` / `scalar`, and writes what comes back (it owns EXEC
masking, register and VCC/EXEC writes). The opcode tables live in alu_vops.py (VALU) and alu_sops.py (SALU), the
IEEE helpers in alu_fp.py.

Conventions the executor relies on:
- Sources are given in LLVM's assembly operand order (v_fmamk_f32 v0, v1, K, v2 -> [v1, K, v2]) as raw bits:
  uint32 arrays for 32-bit and 16-bit operands (the whole register; the op picks the half from opsel), uint64
  arrays for 64-bit ones, bool arrays for lane masks. `operand_type(op, i)` says which, `source_count(op)` how many.
- Implicit operands are appended at the end: VCC of VOP2 v_cndmask_b32 / v_add_co_ci_u32 (and of the VOPD
  v_dual_cndmask_b32) and of v_div_fmas_*; the old destination value of the ops that read it (`reads_dest`:
  v_fmac_*, s_fmac_*, s_addk_i32, s_mulk_i32, s_bitset*), and for SOPK compares (s_cmpk_*) the register itself.
- A 16-bit result comes back in the low 16 bits of `d`; `d16_hi` says it belongs in the high half. The other half
  of the destination register is kept (RDNA3 ISA guide, 16-bit VALU results; gfx11 v_cvt_f16_f32 keeps the high
  bits, tinygrad test/amd/hw/test_vop1.py test_v_cvt_f16_f32_preserves_high_bits). gfx11 VOP1/VOP2/VOPC encode a
  16-bit operand's half in VGPR bit 7 (v129 = v1.hi): the decoder must turn that into opsel bits (src i -> bit i,
  vdst -> bit 3) on a register number below 128.
- Float mode: `mode` (alu_fp.FloatMode, FloatMode.from_rsrc1 for a kernel descriptor); the default is our
  compiler's kernels: denormals kept, round to nearest even, gfx11 IEEE mode and DX10 clamp on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emu.amd.isa import alu_fp as fp
from emu.amd.isa import alu_sops as sops
from emu.amd.isa import alu_vops as vops
from emu.amd.isa.alu_fp import FloatMode
from emu.amd.isa.instr import Instr

__all__ = ["VResult", "SResult", "FloatMode", "vector", "scalar", "has_vector", "has_scalar", "operand_type",
           "dest_type", "source_count", "reads_dest", "writes_exec", "compile_vector", "compile_scalar"]

_DEFAULT_MODE = FloatMode()
_W16, _W64 = frozenset(("f16", "b16", "u16", "i16")), frozenset(("f64", "b64", "u64", "i64"))
_NP = {"f16": np.float16, "u16": np.uint16, "b16": np.uint16, "i16": np.int16, "f32": np.float32, "u32": np.uint32,
       "b32": np.uint32, "i32": np.int32, "f64": np.float64, "u64": np.uint64, "b64": np.uint64, "i64": np.int64}
_UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}
# ops whose NaN result bits the ISA pseudocode fixes itself (no first-NaN-input normalization afterwards)
_OWN_NAN = ("v_max", "v_min", "v_med3", "v_div_fixup", "v_fma_mix", "v_pk_max", "v_pk_min")


@dataclass(slots=True)
class VResult:
    """A VALU op's full-lane result: `d` the destination bits (uint32 for 32- and 16-bit results, uint64 for 64-bit
    ones), `mask` the lane-mask output (carry out, compare result, VCC of v_div_scale), `d16_hi` a 16-bit result
    that goes to the high half."""
    d: np.ndarray | None
    mask: np.ndarray | None
    d16_hi: bool = False


@dataclass(slots=True)
class SResult:
    """A SALU op's result: `d` (masked python int) or None when nothing is written, `scc` the new SCC or None to
    leave it, `exec` the new EXEC for the saveexec / wrexec ops."""
    d: int | None
    scc: bool | None
    exec: int | None = None


def _base(op: str) -> str:
    """Accept an encoding suffix and the VOPD spelling too (v_dual_fmac_f32 -> v_fmac_f32)."""
    for suf in ("_e32", "_e64", "_dpp", "_sdwa"):
        if op.endswith(suf):
            op = op[: -len(suf)]
    return "v_" + op[7:] if op.startswith("v_dual_") else op


def has_vector(op: str) -> bool:
    return _base(op) in vops.TABLE


def has_scalar(op: str) -> bool:
    op = _base(op)
    return op in sops.TABLE or op in sops.FLOAT_OPS


def _spec_types(op: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    b = _base(op)
    if b in vops.TABLE:
        s = vops.TABLE[b]
        return s.dst, s.src
    if b in sops.FLOAT_OPS:
        v = vops.TABLE[sops.FLOAT_OPS[b][0]]
        return (("none",) if v.dst == ("mask",) else v.dst), v.src
    if b in sops.TABLE:
        s = sops.TABLE[b]
        return (s.dst,), s.src
    raise NotImplementedError(f"instruction {op} is not emulated: no SALU/VALU semantics for it in "
                              f"emu/amd/isa/alu.py (add it to alu_vops.py or alu_sops.py)")


def operand_type(op: str, i: int) -> str:
    """Type of source i: "f16" "f32" "f64" "b16" "u16" "i16" "b32" "u32" "i32" "b64" "u64" "i64" or "mask". 16-bit
    types still mean "read the whole 32-bit register"; inline constants for an f16 source are f16 bit patterns."""
    src = _spec_types(op)[1]
    if not 0 <= i < len(src):
        raise IndexError(f"{op} has {len(src)} sources ({', '.join(src) or 'none'}), not a source {i}")
    return src[i]


def dest_type(op: str, i: int = 0) -> str:
    """Type of destination i in ISA order (v_add_co_u32: 0 -> "u32", 1 -> "mask"); v_cmp*: "mask"; SALU compares:
    "none" (they only set SCC). A 16-bit SALU float result (s_add_f16, s_cvt_f16_f32) is zero-extended to 32 bits."""
    dst = _spec_types(op)[0]
    if not 0 <= i < len(dst):
        raise IndexError(f"{op} has {len(dst)} destinations ({', '.join(dst)}), not a destination {i}")
    return dst[i]


def source_count(op: str) -> int:
    """How many sources `vector`/`scalar` expect, implicit ones (VCC, the old destination) included."""
    return len(_spec_types(op)[1])


def reads_dest(op: str) -> bool:
    """The op reads its destination register: hand its old value as the last source (v_fmac_f32: src[2])."""
    b = _base(op)
    return b.startswith(("v_fmac_", "v_mac_")) or b in sops.READS_DEST


def writes_exec(op: str) -> bool:
    """v_cmpx_* write their lane mask to EXEC (gfx10+: only EXEC, no SGPR destination)."""
    return _base(op).startswith("v_cmpx_")


# ---- VALU ------------------------------------------------------------------------------------------------------------

def _bit(mask: int, i: int) -> bool:
    return bool((mask >> i) & 1)


def _decode(raw: np.ndarray, t: str, i: int, f: dict, hi: bool, negate: bool, absolute: bool) -> np.ndarray:
    """Raw register bits -> a typed array with the half selected and abs/neg applied (abs first: -|x|). The sign
    modifiers act on the sign bit, so they also serve v_cndmask_b32 / v_mov_b32 where LLVM allows them."""
    if t == "mask":
        return np.asarray(raw).astype(bool)
    if t in _W16:
        r = np.asarray(raw).astype(np.uint32)
        b = ((r >> np.uint32(16)) if hi else r).astype(np.uint16)
        width = 16
    elif t in _W64:
        b, width = np.asarray(raw).astype(np.uint64), 64
    else:
        b, width = np.asarray(raw).astype(np.uint32), 32
    if t[0] in "fb" and (negate or absolute):
        ut = _UINT[width]
        sign = ut(1 << (width - 1))
        if absolute:
            b = b & ut(~sign & ((1 << width) - 1))
        if negate:
            b = b ^ sign
    return b.view(_NP[t])


def _encode(v: np.ndarray, t: str, lanes: int) -> np.ndarray:
    v = np.asarray(v)
    if v.shape != (lanes,):
        v = np.broadcast_to(v, (lanes,))
    if t in fp.FLOAT:
        b = fp.bits(v, t)
        return b.astype(np.uint32) if t == "f16" else b
    if v.dtype == np.bool_:
        v = v.astype(np.uint8)
    if t in _W64:
        return v.astype(np.int64).view(np.uint64) if v.dtype.kind == "i" else v.astype(np.uint64)
    width = 16 if t in _W16 else 32
    return (v.astype(np.int64) & ((1 << width) - 1)).astype(np.uint32)


def _post_float(r: np.ndarray, kind: str, spec: vops.VOp, ins: Instr, args: list, ctx: vops.Ctx) -> np.ndarray:
    """NaN normalization, omod, clamp and denormal flushing of an IEEE arithmetic result."""
    ft = fp.FLOAT[kind][0]
    r = np.asarray(r).astype(ft)
    if not spec.name.startswith(_OWN_NAN):
        r = fp.fix_nan(r, kind, [a for a in args if a.dtype == ft])
    omod = ins.fields.get("omod", 0)
    # omod is ignored by the hardware when MODE.IEEE is set (LLVM SIFoldOperands, "omod is ignored by hardware if
    # IEEE bit is enabled"; tinygrad test/amd/hw test_omod_ignored on gfx11)
    if omod and not ctx.mode.ieee:
        r = fp.fix_nan((r.astype(np.float64) * {1: 2.0, 2: 4.0, 3: 0.5}[omod]).astype(ft), kind, [r])
    if ctx.clamp:  # clamp to [0, 1]; a NaN becomes 0 with DX10_CLAMP (tinygrad test_clamp_with_nan), -0 -> +0
        nan = np.isnan(r)
        r = np.where(r > 1, ft(1), np.where(r > 0, r, ft(0)))
        r = np.where(nan, ft(0) if ctx.mode.dx10_clamp else r, r).astype(ft)
    if ctx.mode.flushes(kind):
        r = fp.flush_vals(r, kind)
    return r


def vector(ins: Instr, src: list[np.ndarray], mode: FloatMode | None = None) -> VResult:
    """Run VALU op `ins.op` on per-lane sources (see the module docstring for their order and form)."""
    op = _base(ins.op)
    spec = vops.TABLE.get(op)
    if spec is None:
        raise NotImplementedError(f"instruction {ins.op} at pc {ins.pc:#x} is not emulated: no VALU semantics for "
                                  f"{op} in emu/amd/isa/alu_vops.py")
    if len(src) != len(spec.src):
        raise ValueError(f"{ins.op} at pc {ins.pc:#x} takes {len(spec.src)} sources ({', '.join(spec.src)}; implicit "
                         f"VCC / old destination last), got {len(src)}")
    mode = mode or _DEFAULT_MODE
    f = ins.fields
    lanes = max((np.size(s) for s in src), default=1)
    src = [s if getattr(s, "shape", None) == (lanes,) else np.broadcast_to(np.asarray(s), (lanes,)) for s in src]
    ctx = vops.Ctx(ins, mode, bool(f.get("clamp", 0)), lanes)
    with np.errstate(all="ignore"):
        if spec.packed:
            return _packed(spec, ins, src, ctx)
        opsel, neg, abs_ = f.get("opsel", 0), f.get("neg", 0), f.get("abs", 0)
        if op in vops.MIX_OPS:
            args = [_mix_source(s, i, f) for i, s in enumerate(src)]
        else:
            args = [_decode(s, t, i, f, _bit(opsel, i), _bit(neg, i), _bit(abs_, i))
                    for i, (s, t) in enumerate(zip(src, spec.src))]
        if spec.arith and mode.flushes(spec.arith):
            args = [fp.flush_vals(a, spec.arith) if a.dtype == fp.FLOAT[spec.arith][0] else a for a in args]
        out = spec.fn(ctx, *args)
        outs = out if isinstance(out, tuple) else (out,)
        d = mask = None
        for t, v in zip(spec.dst, outs):
            if t == "mask":
                mask = np.asarray(v, bool)
                mask = mask.copy() if mask.shape == (lanes,) else np.broadcast_to(mask, (lanes,)).copy()
            else:
                if spec.arith and t == spec.arith:
                    v = _post_float(v, t, spec, ins, args, ctx)
                d = _encode(v, t, lanes)
    hi = spec.dst[0] in _W16 and (op == "v_fma_mixhi_f16" or _bit(f.get("opsel", 0), 3))
    return VResult(d, mask, hi)


def _mix_source(raw: np.ndarray, i: int, f: dict) -> np.ndarray:
    """ISA:V_FMA_MIX_F32 sources: opsel_hi[i] set -> f16 (opsel[i] picks the half) converted to f32, else f32;
    abs comes in the NEG_HI field for these ops (RDNA3 ISA guide VOP3P: "NEG_HI used as ABS for FMA_MIX")."""
    r = np.asarray(raw).astype(np.uint32)
    if _bit(f.get("opsel_hi", 0), i):
        h = ((r >> np.uint32(16)) if _bit(f.get("opsel", 0), i) else r).astype(np.uint16)
        x = h.view(np.float16).astype(np.float32)
    else:
        x = r.view(np.float32)
    if _bit(f.get("abs", f.get("neg_hi", 0)), i):
        x = np.abs(x)
    if _bit(f.get("neg", 0), i):
        x = -x
    return x


def _packed(spec: vops.VOp, ins: Instr, src: list[np.ndarray], ctx: vops.Ctx) -> VResult:
    """VOP3P packed op: the low result from the halves opsel picks, the high result from the halves opsel_hi picks
    (default op_sel_hi:[1,1,1]); neg / neg_hi negate the low / high float inputs (RDNA3 ISA guide VOP3P)."""
    f = ins.fields
    opsel, opsel_hi = f.get("opsel", 0), f.get("opsel_hi", 0b111)
    neg, neg_hi = f.get("neg", 0), f.get("neg_hi", 0)
    halves = []
    for sel, ng in ((opsel, neg), (opsel_hi, neg_hi)):
        args = [_decode(s, t, i, f, _bit(sel, i), _bit(ng, i) and t == "f16", False)
                for i, (s, t) in enumerate(zip(src, spec.src))]
        if spec.arith and ctx.mode.flushes(spec.arith):
            args = [fp.flush_vals(a, spec.arith) if a.dtype == np.float16 else a for a in args]
        v = spec.fn(ctx, *args)
        if spec.arith:
            v = _post_float(v, spec.arith, spec, ins, args, ctx)
        halves.append(_encode(v, spec.dst[0], ctx.lanes))
    return VResult(halves[0] | (halves[1] << np.uint32(16)), None, False)


# ---- SALU ------------------------------------------------------------------------------------------------------------

def scalar(ins: Instr, src: list[int], scc: bool, exec: int, wave64: bool, mode: FloatMode | None = None) -> SResult:
    """Run SALU op `ins.op`. `src` are python ints (32- or 64-bit per operand_type), SOPK's SIMM16 comes from
    ins.fields["simm16"]; `exec` is the current EXEC (32 bits in wave32, 64 in wave64)."""
    op = _base(ins.op)
    if op in sops.FLOAT_OPS:
        return _scalar_float(ins, op, src, mode)
    spec = sops.TABLE.get(op)
    if spec is None:
        raise NotImplementedError(f"instruction {ins.op} at pc {ins.pc:#x} is not emulated: no SALU semantics for "
                                  f"{op} in emu/amd/isa/alu_sops.py")
    if len(src) != len(spec.src):
        raise ValueError(f"{ins.op} at pc {ins.pc:#x} takes {len(spec.src)} sources ({', '.join(spec.src) or 'none'}"
                         f"; SOPK ops reading their register get it as src[0]), got {len(src)}")
    widths = [(1 << (64 if t in _W64 else 32)) - 1 for t in spec.src]
    ctx = sops.SCtx(bool(scc), int(exec) & ((1 << (64 if wave64 else 32)) - 1), wave64,
                    int(ins.fields.get("simm16", 0)))
    out = spec.fn(ctx, *[int(v) & m for v, m in zip(src, widths)])
    d = None if out[0] is None or spec.dst == "none" else int(out[0]) & ((1 << (64 if spec.dst in _W64 else 32)) - 1)
    scc_out = None if out[1] is None else bool(out[1])
    return SResult(d, scc_out, None if len(out) < 3 else int(out[2]))


def _scalar_float(ins: Instr, op: str, src: list[int], mode: FloatMode | None) -> SResult:
    """SALU float ops share the VALU op's semantics on one lane; 16-bit results are zero-extended."""
    vop, opsel = sops.FLOAT_OPS[op]
    lane = Instr(op=vop, enc="VOP3", size=ins.size, pc=ins.pc, fields={"opsel": opsel * 0b111})
    types = vops.TABLE[vop].src
    raw = [np.array([int(v) & ((1 << 64) - 1 if t in _W64 else 0xFFFFFFFF)],
                    np.uint64 if t in _W64 else np.uint32) for v, t in zip(src, types)]
    if len(raw) != len(types):
        raise ValueError(f"{ins.op} at pc {ins.pc:#x} takes {len(types)} sources, got {len(src)}")
    r = vector(lane, raw, mode)
    if r.mask is not None and r.d is None:
        return SResult(None, bool(r.mask[0]))
    return SResult(int(r.d[0]), None)


# ---- instruction-bound forms (the wave executor's hot path) --------------------------------------------------------
from emu.amd.isa.alu_compile import compile_scalar, compile_vector  # noqa: E402  (it builds on the functions above)
