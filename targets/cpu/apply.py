"""The pass that gives every not-yet-scheduled TIR kernel a default CPU schedule.

Rules are tried in order; the first that returns a schedule wins. A rule that
declines returns its reason, and one that fails (a TVM schedule error on an
unusual kernel) is skipped, so a kernel always ends up at worst as plain loops.
"""

from __future__ import annotations

import logging
from collections import Counter

import tvm
from edgec.targets.cpu.conv import Conv
from edgec.targets.cpu.conv_depthwise import ConvDepthwise
from edgec.targets.cpu.conv_vnni import ConvVNNI
from edgec.targets.cpu.elementwise import Elementwise
from edgec.targets.cpu.int8 import repair_ssa
from edgec.targets.cpu.matmul import Matmul
from edgec.targets.cpu.matmul_vnni import MatmulVNNI
from edgec.targets.cpu.norm import Norm
from edgec.targets.cpu.pool import Pool
from edgec.targets.cpu.reduction import Reduction
from edgec.targets.cpu.rule import CPURule
from tvm import s_tir, tirx
from tvm.target import Target

log = logging.getLogger(__name__)

# Most specific first: Reduction accepts any kernel with a reduction.
RULES: tuple[CPURule, ...] = (
    MatmulVNNI(), ConvVNNI(), Matmul(), ConvDepthwise(), Conv(), Pool(), Norm(), Elementwise(),
    Reduction(),
)


def _scheduled(func: tirx.PrimFunc) -> bool:
    return bool(func.attrs is not None and func.attrs.get("tirx.is_scheduled", False))


def schedule_func(
    func: tirx.PrimFunc, target: Target, rules: tuple[CPURule, ...] = RULES
) -> tuple[tirx.PrimFunc, str]:
    """``func`` scheduled by the first rule that applies, and that rule's name ("" if none)."""
    for rule in rules:
        try:
            result = rule.schedule(func, target)
        except Exception as exc:  # noqa: BLE001 - TVM raises plain errors; a schedule primitive refused this kernel
            log.debug("%s failed: %s", type(rule).__name__, str(exc).splitlines()[0:1])
            continue
        if isinstance(result, s_tir.Schedule):
            new = result.mod["main"]
            # A schedule TVM accepted can still be malformed (a buffer read after the
            # block writing it was inlined away); such a kernel keeps its plain loops.
            if not _well_formed(new):
                # a let-bound int8 epilogue inlined at two reads: rename, then recheck
                new = repair_ssa(new)
            if not _well_formed(new):
                log.debug("%s produced a malformed kernel", type(rule).__name__)
                continue
            return new.with_attr("tirx.is_scheduled", True), type(rule).__name__
        log.debug("%s declined: %s", type(rule).__name__, result)
    return func, ""


def _well_formed(func: tirx.PrimFunc) -> bool:
    from tvm.s_tir.analysis import verify_well_formed

    try:
        return bool(verify_well_formed(func, assert_mode=False))
    except Exception:  # noqa: BLE001 - TVM raises plain errors
        return False


@tvm.transform.module_pass(opt_level=0, name="edgec.ApplyCPUSchedules")
class ApplyCPUSchedules:
    """Schedule each PrimFunc without ``tirx.is_scheduled`` (tuned ones keep theirs)."""

    def __init__(self, rules: tuple[CPURule, ...] = RULES) -> None:
        self.rules = rules
        self.fired: Counter[str] = Counter()  # rule name -> kernels it scheduled

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _scheduled(func):
                continue
            target = func.attrs.get("target") if func.attrs else None
            target = target or Target.current(allow_none=False)
            new, rule = schedule_func(func, target, self.rules)
            self.fired[rule or "none"] += 1
            if rule:
                updates[gv] = new
        for gv, func in updates.items():
            mod[gv] = func
        return mod
