"""Targets edgec compiles for. ``get_target("arm-cpu:cortex-a72")`` returns its description."""

from __future__ import annotations

from edgec.errors import TargetError
from edgec.targets.base import TargetDesc

FAMILIES = ("host", "arm-cpu", "edge-npu")


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
    if family == "edge-npu":
        from edgec.targets.edge_npu.target import npu_target

        return npu_target(preset or "edge-npu")
    raise TargetError(f"unknown target {spec!r}; known: {', '.join(list_targets())}")


def list_targets() -> list[str]:
    """Every target spec a user can pass to ``--target``."""
    from edgec.targets.arm_cpu import PRESETS

    from edgec.targets.edge_npu.config import config_names

    npu = ["edge-npu"] + [f"edge-npu:{n}" for n in config_names() if n != "edge-npu"]
    return ["host"] + [f"arm-cpu:{name}" for name in PRESETS] + npu


__all__ = ["TargetDesc", "get_target", "list_targets"]
