"""int8 epilogues: let-bound requantization inlined at several reads, made SSA again.

edgec's ``binary32`` requantization (``passes/quantize/lower.binary32_te``) is one TIR
expression whose intermediates are ``Let`` bindings (``u``, ``j``, ``d``), so that
inlining it into the conv / matmul write-back does not copy operand trees. When an
epilogue reads the requantized value more than once (hard-swish reads it twice:
``x * clip(x + 3, 0, 6) / 6``), ``compute_inline`` substitutes the expression at each
read and the same ``Let`` variables are defined twice. The kernel is then not SSA,
``verify_well_formed`` rejects it, and the default schedules would fall through to a
rule that does not tile convolutions (measured on PP-OCR cls: 26 of 54 int8 conv
kernels, ~75x slower). Renaming the repeated definitions (``ConvertSSA``) gives an
equivalent, well-formed kernel.
"""

from __future__ import annotations

import tvm
from tvm import tirx


def repair_ssa(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with every variable defined more than once renamed (same semantics);
    ``func`` unchanged if TVM cannot rename it (malformed for another reason)."""
    try:
        return tvm.tirx.transform.ConvertSSA()(tvm.IRModule({"main": func}))["main"]
    except Exception:  # noqa: BLE001 - TVM raises plain errors; the caller rechecks
        return func
