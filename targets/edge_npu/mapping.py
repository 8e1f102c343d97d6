"""How a conv / GEMM layer is mapped onto the array, and the key it is tuned under.

A ``Mapping`` holds the knobs the program generator takes (dataflow, output rows per
band, loop order); ``None`` fields mean the generator's default. A ``workload_key``
names what the cycles of a mapping depend on: the config, the layer's geometry, where
its input and output live (host link or parameter cache) and whether its weights are
streamed or a LUT is fused, not its weights' values or quantization parameters, so a
tuning database applies to any model with the same layer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .isa import Space
from .programs import Conv

LOOP_ORDERS = ("band", "tile")


@dataclass(frozen=True)
class Mapping:
    """``dataflow`` "ws" / "os"; ``band_rows`` output rows per band; ``order`` "band"
    (each band runs all N-tiles) or "tile" (each N-tile runs all bands)."""

    dataflow: str | None = None
    band_rows: int | None = None
    order: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Mapping:
        return Mapping(d.get("dataflow"), d.get("band_rows"), d.get("order"))


def workload_key(config: str, conv: Conv, inp: Space, out: Space, streamed: bool = False,
                 lut: bool = False, kind: str = "conv", scale: bool = False,
                 residual: bool | Space = False) -> str:
    """A stable string naming everything a mapping's cycles depend on (``scale`` /
    ``residual``: a fused input scale or residual add, ``lower.SegLayer``; ``residual``
    may be the space the added tensor lives in, named in the key when it is not the
    input's)."""
    shape = asdict(conv)
    for name in ("phases", "pack"):
        if shape[name] == 1:
            del shape[name]  # keys of ordinary convs stay as tuning databases hold them
    key = {"config": config, "kind": kind, "conv": shape, "in": Space(inp).name.lower(),
           "out": Space(out).name.lower(), "streamed": bool(streamed), "lut": bool(lut)}
    if scale:
        key["scale"] = True
    if residual is not False:  # a Space (PCACHE is 0) or True
        key["residual"] = (True if residual is True or Space(residual) == Space(inp)
                           else Space(residual).name.lower())
    return json.dumps(key, sort_keys=True)


__all__ = ["LOOP_ORDERS", "Mapping", "workload_key"]
