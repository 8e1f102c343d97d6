"""Run an ordered pass list: error wrapping, ``--dump-ir``, ``--verify``, timings.

A failing pass becomes one EdgecError naming it and the passes before it:
"pass fold-batchnorm after [a, b]: <first line of the error>".
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError


def run_passes(
    mod: Any,
    passes: Sequence[Any],
    ctx: Any,
    dump_ir: str | Path | None = None,
    verify: bool = False,
) -> tuple[Any, list[str], dict[str, float]]:
    """Apply ``passes`` (PassInfo list) in order; return ``(mod, applied names, seconds)``.

    ``dump_ir``: write TVMScript of the imported module (``00-import.py``) and after
    each pass (``01-<name>.py``, ...). ``verify``: check well-formedness of the
    imported module and after each pass.
    """
    from edgec.frontend import _first_line

    out_dir = _dump_dir(dump_ir)
    applied: list[str] = []
    timings: dict[str, float] = {}
    if verify:
        _verify(mod, "import", applied)
    _dump(out_dir, 0, "import", mod)
    for i, p in enumerate(passes, start=1):
        start = time.perf_counter()
        try:
            new = p.apply(mod, ctx)
        except EdgecError as exc:
            raise EdgecError(f"pass {p.name} after [{', '.join(applied)}]: {exc}") from None
        except Exception as exc:  # noqa: BLE001  any pass bug becomes one named line
            raise EdgecError(
                f"pass {p.name} after [{', '.join(applied)}]: {_first_line(exc)}"
            ) from None
        timings[p.name] = round(time.perf_counter() - start, 4)
        if not _is_module(new):
            raise EdgecError(
                f"pass {p.name} after [{', '.join(applied)}]: returned "
                f"{type(new).__name__}, not an IRModule"
            )
        if verify:
            _verify(new, p.name, applied)
        mod = new
        applied.append(p.name)
        _dump(out_dir, i, p.name, mod)
    return mod, applied, timings


def _is_module(obj: Any) -> bool:
    import tvm

    return isinstance(obj, tvm.IRModule)


def _verify(mod: Any, name: str, before: list[str]) -> None:
    from edgec.frontend import _first_line
    from tvm import relax

    where = "the imported module" if name == "import" else f"pass {name}"
    try:
        # TVM 0.27: raises on the first violation (check_well_formed gives a bool).
        relax.analysis.well_formed(mod)
        return
    except Exception as exc:  # noqa: BLE001  TVM raises its own error types here
        raise EdgecError(
            f"--verify: {where} after [{', '.join(before)}] left an ill-formed module: "
            f"{_first_line(exc)}"
        ) from None


def _dump_dir(dump_ir: str | Path | None) -> Path | None:
    if dump_ir is None:
        return None
    path = Path(dump_ir)
    if path.exists() and not path.is_dir():
        raise EdgecError(f"--dump-ir {path} is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _dump(out_dir: Path | None, index: int, name: str, mod: Any) -> None:
    if out_dir is None:
        return
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    # show_meta=False: weights would make each file megabytes; the structure is the point
    (out_dir / f"{index:02d}-{safe}.py").write_text(mod.script(show_meta=False))
