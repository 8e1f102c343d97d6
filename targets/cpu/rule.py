"""The rule interface: a rule schedules a kernel or says why it does not apply."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target


class CPURule(ScheduleRule):
    """A dlight ``ScheduleRule`` whose ``schedule`` returns a Schedule or a reason string.

    The reason is what a log prints when the rule does not fire
    ("has a reduction", "dynamic extent").
    """

    name: str = ""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        raise NotImplementedError

    def apply(
        self, func: tirx.PrimFunc, target: Target, tunable: bool
    ) -> s_tir.Schedule | None:
        """dlight's entry point (lets these rules run under ``ApplyDefaultSchedule`` too)."""
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        result = self.schedule(func, target)
        return None if isinstance(result, str) else result
