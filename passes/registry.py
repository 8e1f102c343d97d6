"""The pass registry: built-in and user passes are the same kind of object.

A pass is a function ``(IRModule, PassContext) -> IRModule`` (or a TVM module pass)
registered under a name, in a phase, optionally ordered before/after other passes.
The pipeline runs phases in ``PHASES`` order and, inside a phase, a topological order
of the before/after constraints (registration order breaks ties).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgec.errors import EdgecError

PHASES = ("import", "optimize", "quantize", "partition", "lower")
ENTRY_POINT_GROUP = "edgec.passes"


@dataclass
class PassContext:
    """What a pass may read (target, calibration data) and write (its report)."""

    target: Any
    calib: list[dict[str, Any]] | None = None
    report: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassInfo:
    name: str
    phase: str
    fn: Callable[..., Any]
    doc: str
    origin: str  # "built-in", "user", or "plugin:<dist>"
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    default: bool = True  # run without being asked for

    def apply(self, mod: Any, ctx: PassContext) -> Any:
        import tvm

        if isinstance(self.fn, tvm.transform.Pass):
            return self.fn(mod)
        return self.fn(mod, ctx)


_REGISTRY: dict[str, PassInfo] = {}
_plugins_loaded = False


def register_pass(
    name: str,
    phase: str = "optimize",
    *,
    before: str | tuple[str, ...] | list[str] = (),
    after: str | tuple[str, ...] | list[str] = (),
    default: bool = False,
    origin: str = "user",
) -> Callable[[Any], Any]:
    """Decorator registering ``fn(mod, ctx) -> mod`` (or a TVM pass) as ``name``.

    User passes are off by default (``edgec build --pass NAME`` turns one on);
    built-in passes register with ``default=True``.
    """
    if phase not in PHASES:
        raise EdgecError(f"pass {name!r}: unknown phase {phase!r}; phases: {', '.join(PHASES)}")

    def as_tuple(v: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
        return (v,) if isinstance(v, str) else tuple(v)

    def decorate(fn: Any) -> Any:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise EdgecError(f"pass {name!r} is registered twice ({_REGISTRY[name].origin})")
        doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
        _REGISTRY[name] = PassInfo(
            name, phase, fn, doc[0] if doc else "", origin, as_tuple(before), as_tuple(after),
            default,
        )
        return fn

    return decorate


def load_plugins() -> None:
    """Import every module registered in the ``edgec.passes`` entry-point group once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            raise EdgecError(f"pass plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from None


def all_passes() -> dict[str, PassInfo]:
    import edgec.passes  # noqa: F401  (registers the built-in passes)

    load_plugins()
    return dict(_REGISTRY)


def resolve(enable: list[str] | None = None, disable: list[str] | None = None) -> list[PassInfo]:
    """The ordered passes to run: defaults, plus ``enable``, minus ``disable``."""
    registry = all_passes()
    for name in list(enable or []) + list(disable or []):
        if name not in registry:
            raise EdgecError(f"unknown pass {name!r}; `edgec passes` lists them")
    chosen = [p for p in registry.values() if (p.default or p.name in (enable or []))]
    chosen = [p for p in chosen if p.name not in (disable or [])]
    return _order(chosen, registry)


def _order(chosen: list[PassInfo], registry: dict[str, PassInfo]) -> list[PassInfo]:
    names = {p.name for p in chosen}
    for p in chosen:
        for other in p.before + p.after:
            if other not in registry:
                raise EdgecError(f"pass {p.name!r} is ordered against unknown pass {other!r}")
    # edges a -> b: a runs before b
    edges: dict[str, set[str]] = {p.name: set() for p in chosen}
    for p in chosen:
        for b in p.before:
            if b in names:
                edges[p.name].add(b)
        for a in p.after:
            if a in names:
                edges[a].add(p.name)
    rank = {p.name: (PHASES.index(p.phase), i) for i, p in enumerate(chosen)}
    for a, succ in edges.items():
        for b in succ:
            if rank[a][0] > rank[b][0]:
                raise EdgecError(
                    f"pass order: {a!r} ({registry[a].phase}) cannot run before "
                    f"{b!r} ({registry[b].phase})"
                )
    indeg = {n: 0 for n in edges}
    for succ in edges.values():
        for b in succ:
            indeg[b] += 1
    ready = sorted((rank[n], n) for n, d in indeg.items() if d == 0)
    out: list[PassInfo] = []
    while ready:
        _, n = ready.pop(0)
        out.append(registry[n])
        for b in edges[n]:
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append((rank[b], b))
                ready.sort()
    if len(out) != len(chosen):
        cyc = sorted(n for n, d in indeg.items() if d > 0)
        raise EdgecError(f"pass order has a cycle among: {', '.join(cyc)}")
    return out
