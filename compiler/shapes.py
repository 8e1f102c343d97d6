"""Parsing of ``--input-shape name=1x3x48x192`` and ``--input name=file.npy`` flags."""

from __future__ import annotations

import re

from edgec.errors import EdgecError

_SHAPE_RE = re.compile(r"^(?P<name>[^=]+)=(?P<dims>\d+(x\d+)*)?$")


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``name=AxBxC`` strings into ``{name: (A, B, C)}``.

    A scalar input is written ``name=`` (empty shape). Every dimension must be a
    positive integer; a name may be given once.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        m = _SHAPE_RE.match(spec.strip())
        if m is None:
            raise EdgecError(
                f"malformed --input-shape {spec!r}: expected NAME=DxDx..., e.g. x=1x3x224x224"
            )
        name = m.group("name")
        dims = tuple(int(d) for d in m.group("dims").split("x")) if m.group("dims") else ()
        if any(d <= 0 for d in dims):
            raise EdgecError(f"malformed --input-shape {spec!r}: dimensions must be positive")
        if any(d > 1 << 31 for d in dims):
            raise EdgecError(f"malformed --input-shape {spec!r}: dimension too large")
        if name in shapes:
            raise EdgecError(f"--input-shape gives input {name!r} twice")
        shapes[name] = dims
    return shapes


def format_shape(shape: tuple[int, ...] | list[int | str]) -> str:
    """``(1, 3, 48, 192)`` -> ``1x3x48x192``."""
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"
