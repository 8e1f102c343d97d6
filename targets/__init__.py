"""Targets edgec compiles for. ``get_target("arm-cpu:cortex-a72")`` returns its description."""

from __future__ import annotations

from edgec.errors import TargetError
from edgec.targets.base import TargetDesc

FAMILIES = ("host", "arm-cpu")


def get_target(spec: str) -> TargetDesc:
    """Resolve ``host``, ``arm-cpu`` (default preset) or ``arm-cpu:<preset>``."""
    family, _, preset = spec.partition(":")
    if family == "host":
        if preset:
            raise TargetError(f"target 'host' takes no preset (got {spec!r})")
        from edgec.targets.host import host_target

        return host_target()
    if family == "arm-cpu":
        from edgec.targets.arm_cpu import arm_target

        return arm_target(preset or None)
    raise TargetError(f"unknown target {spec!r}; known: {', '.join(list_targets())}")


def list_targets() -> list[str]:
    """Every target spec a user can pass to ``--target``."""
    from edgec.targets.arm_cpu import PRESETS

    return ["host"] + [f"arm-cpu:{name}" for name in PRESETS]


__all__ = ["TargetDesc", "get_target", "list_targets"]
