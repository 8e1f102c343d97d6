"""aarch64 CPUs, described by presets in presets.json; run here under qemu-aarch64."""

from __future__ import annotations

import json
from pathlib import Path

from edgec.errors import TargetError
from edgec.targets.base import TargetDesc

MTRIPLE = "aarch64-linux-gnu"
_DATA = json.loads((Path(__file__).parent / "presets.json").read_text())
PRESETS: dict[str, dict] = _DATA["presets"]
DEFAULT_PRESET: str = _DATA["default"]


def arm_target(preset: str | None = None) -> TargetDesc:
    """The target for an ARM preset (``cortex-a72`` when none is given)."""
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise TargetError(f"unknown arm-cpu preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    p = PRESETS[name]
    features = tuple(a.lstrip("+") for a in p["mattr"])
    return TargetDesc(
        name=f"arm-cpu:{name}",
        family="arm-cpu",
        tvm={
            "kind": "llvm",
            "mtriple": MTRIPLE,
            "mcpu": p["mcpu"],
            "mattr": list(p["mattr"]),
            "num-cores": int(p["cores"]),
        },
        runner="qemu-aarch64",
        description=p["description"],
        features=features,
    )
