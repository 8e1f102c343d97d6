"""What every target declares: its name, its TVM target and how its code is run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TargetDesc:
    """A compilation target as data.

    ``tvm`` is the TVM target dict (TVM 0.27 refuses the CLI string form);
    ``runner`` names how a package for it is executed: ``host`` in-process,
    ``qemu-aarch64`` through the deploy runner, ``npu-sim`` on the simulator.
    """

    name: str  # canonical spec, e.g. "arm-cpu:cortex-a72"
    family: str  # "host", "arm-cpu", "edge-npu"
    tvm: dict[str, Any]
    runner: str
    description: str = ""
    features: tuple[str, ...] = field(default_factory=tuple)

    def tvm_target(self) -> Any:
        import tvm

        return tvm.target.Target(dict(self.tvm))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "tvm": dict(self.tvm),
            "runner": self.runner,
            "features": list(self.features),
        }
