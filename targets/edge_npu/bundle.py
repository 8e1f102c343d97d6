"""An ``NpuModel`` as package files: ``npu.json`` (metadata) + ``npu.bin`` (bytes). No pickle.

npu.bin is the concatenation of each segment's program (16-byte ISA records, ``isa.to_bytes``)
and the memory images (weights, parameter blocks); npu.json says where each lives:

    {"format": "edgec-npu", "version": 1, "key": 123, "config": "edge-npu",
     "host_bytes": ..., "segments": [{"name", "program": [offset, size],
                                      "inputs": [{"name", "addr", "shape"}], "outputs": [...],
                                      "layers": [per-layer figures]}],
     "images": [{"space": "pcache"|"host", "addr", "offset", "size"}], ...}
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from edgec.errors import PackageError

from .isa import Space, from_bytes, to_bytes
from .lower import LoweredSegment, NpuModel

FORMAT, VERSION = "edgec-npu", 1
JSON_NAME, BIN_NAME = "npu.json", "npu.bin"


def model_key(model: NpuModel) -> int:
    """A stable id of the compiled programs (the VM passes it to the packed function)."""
    h = hashlib.sha256()
    for seg in model.segments:
        h.update(to_bytes(seg.program))
    for space, addr, data in model.images:
        h.update(f"{int(space)}:{addr}:".encode())
        h.update(data)
    return int(h.hexdigest()[:12], 16) & 0x7FFF_FFFF_FFFF


def to_files(model: NpuModel) -> dict[str, bytes]:
    blob = bytearray()
    segs = []
    for seg in model.segments:
        code = to_bytes(seg.program)
        segs.append({"name": seg.name, "program": [len(blob), len(code)],
                     "inputs": seg.inputs, "outputs": seg.outputs, "layers": seg.layers})
        blob += code
    images = []
    for space, addr, data in model.images:
        images.append({"space": space.name.lower(), "addr": addr, "offset": len(blob),
                       "size": len(data)})
        blob += data
    meta = {"format": FORMAT, "version": VERSION, "key": model_key(model),
            "config": model.config, "host_bytes": model.host_bytes,
            "param_bytes": model.param_bytes, "cached_weights": model.cached_weights,
            "streamed_weights": model.streamed_weights, "scratch_bytes": model.scratch_bytes,
            "segments": segs, "images": images}
    return {JSON_NAME: json.dumps(meta, indent=1).encode(), BIN_NAME: bytes(blob)}


def from_files(files: dict[str, bytes]) -> tuple[NpuModel, int]:
    """(model, key) from package members; malformed members raise ``PackageError``."""
    try:
        meta: dict[str, Any] = json.loads(files[JSON_NAME])
        blob = files[BIN_NAME]
    except KeyError as exc:
        raise PackageError(f"edge-npu package lacks {exc.args[0]}") from None
    except json.JSONDecodeError as exc:
        raise PackageError(f"{JSON_NAME}: not valid JSON ({exc.msg})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise PackageError(f"{JSON_NAME}: not an {FORMAT} v{VERSION} file")

    def part(offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > len(blob):
            raise PackageError(f"{BIN_NAME}: range {offset}+{size} is outside its {len(blob)} B")
        return blob[offset:offset + size]

    segs = [LoweredSegment(s["name"], from_bytes(part(*s["program"])), s["inputs"],
                           s["outputs"], s["layers"]) for s in meta["segments"]]
    images = [(Space[i["space"].upper()], int(i["addr"]), part(i["offset"], i["size"]))
              for i in meta["images"]]
    model = NpuModel(meta["config"], segs, images, int(meta["host_bytes"]),
                     int(meta["param_bytes"]), int(meta["cached_weights"]),
                     int(meta["streamed_weights"]), int(meta["scratch_bytes"]))
    return model, int(meta["key"])
