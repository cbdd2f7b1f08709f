"""Decoded RDNA3 (gfx11) / RDNA4 (gfx12) instructions: what the decoder (decode.py) produces and the wave executor
(wave.py) and the ALU semantics (alu.py) consume.

Operands are kept in the ISA's own operand space, the 9-bit source field of SOP/VOP encodings (RDNA3 ISA guide,
"Scalar/Vector ALU operands"; RDNA4 the same except where noted):
  0-105 SGPRs, 106 VCC_LO, 107 VCC_HI, 108-123 TTMPs, 124 NULL (gfx11/gfx12), 125 M0, 126 EXEC_LO, 127 EXEC_HI,
  128 integer 0, 129-192 integers 1..64, 193-208 integers -1..-16, 235-239 shared/private base and limit
  apertures, 240-247 float constants (0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 4.0, -4.0), 248 1/(2*pi),
  250 DPP16, 251 VCCZ, 252 EXECZ, 253 SCC, 255 a 32-bit literal, 256-511 VGPRs 0-255.
A field that can only name a VGPR (vdst, VOP2's vsrc1, a memory instruction's vaddr/vdata) is stored as 256 + v,
one that can only name an SGPR (sdst, sbase) as the SGPR code, so one accessor serves every operand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

VGPR0 = 256
LITERAL = 255
NULL = 124
M0 = 125
VCC_LO, VCC_HI, EXEC_LO, EXEC_HI, SCC = 106, 107, 126, 127, 253


@dataclass(frozen=True)
class Operand:
    """One operand: `code` in the 9-bit operand space above, `count` consecutive 32-bit registers it spans
    (2 for a 64-bit operand, 4 for s[4:7] ...), and the literal's value when code is LITERAL."""
    code: int
    count: int = 1
    literal: Optional[int] = None

    @property
    def is_vgpr(self) -> bool:
        return self.code >= VGPR0

    @property
    def vgpr(self) -> int:
        return self.code - VGPR0


@dataclass(frozen=True)
class Instr:
    """One decoded instruction.

    op:   the base mnemonic as LLVM spells it, without the _e32/_e64/_dpp/_sdwa encoding suffix
          (e.g. "v_add_f32", "v_cmp_gt_i32", "s_load_b128", "global_load_b32", "ds_load_2addr_b32");
    enc:  "SOP1" "SOP2" "SOPK" "SOPC" "SOPP" "SMEM" "VOP1" "VOP2" "VOPC" "VOP3" "VOP3SD" "VOP3P" "VOPD"
          "DS" "FLAT" "GLOBAL" "SCRATCH" "MUBUF" "MTBUF" "MIMG" "VINTERP" "LDSDIR" (gfx12: "VBUFFER", "VIMAGE",
          "VSAMPLE" and so on where they differ) -- the encoding actually used;
    size: bytes, including a trailing literal;
    dst, src: operands in the ISA's order (VOP3SD: dst = (vdst, sdst); VOPC in VOP3: dst = (sdst,);
          VOPC in 32-bit form: dst = () and VCC is implied; memory loads: dst = (vdata,), src = (vaddr, saddr...));
    fields: every other encoding field by the ISA guide's name, lower case: "neg", "abs", "clamp", "omod",
          "opsel", "opsel_hi", "neg_hi" (bit masks over sources for the modifiers), "offset", "offset0",
          "offset1", "glc", "slc", "dlc", "th", "scope", "simm16", "sdst_is_null" ... ;
    pc:   the byte offset of the instruction in the code it was decoded from;
    dual: for VOPD, the X and Y halves as two Instr (enc "VOPD") whose op is the half's mnemonic
          ("v_dual_fmac_f32" -> op "v_fmac_f32" with fields["dual"] = "x" or "y").
    """
    op: str
    enc: str
    size: int
    dst: tuple[Operand, ...] = ()
    src: tuple[Operand, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    pc: int = 0
    dual: tuple["Instr", ...] = ()


class DecodeError(ValueError):
    """Bytes that are not an instruction the decoder knows for this target; says the dword(s), the target and
    the offset, so a fault report can name them."""
