"""Rule lists for pattern passes: a rule is a ``relax.dpl`` pattern and a rewrite.

A rewrite returns the replacement expression, or a string saying why it did not
fire ("W is not a constant"); ``apply_rules`` counts both, so a pass report shows
what fired and why the rest did not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, rewrite_call

Matches = dict[DFPattern, relax.Expr]
Rewrite = Callable[[relax.Expr, Matches], "relax.Expr | str"]


@dataclass(frozen=True)
class Rule:
    """``pattern`` -> ``rewrite(matched, matches)``; ``name`` is the one-line algebra."""

    name: str
    pattern: DFPattern
    rewrite: Rewrite


@dataclass
class RuleStats:
    fired: Counter[str]
    skipped: Counter[str]

    def to_json(self) -> dict[str, Any]:
        return {"fired": dict(self.fired), "skipped": dict(self.skipped)}


def apply_rules(mod: tvm.IRModule, rules: Sequence[Rule]) -> tuple[tvm.IRModule, RuleStats]:
    """Rewrite every Relax function of ``mod`` with ``rules`` (in order) to a fixed point.

    Returns a new module (the input is not changed) with dead bindings removed.
    """
    stats = RuleStats(Counter(), Counter())
    seen_skips: set[tuple[str, str, int]] = set()
    out = mod.clone()
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        new = func
        for rule in rules:
            new = rewrite_call(rule.pattern, _counting(rule, stats, seen_skips), new)
        if not new.same_as(func):
            out[gv] = relax.analysis.remove_all_unused(new)
    return out, stats


def _counting(rule: Rule, stats: RuleStats, seen: set[tuple[str, str, int]]) -> Rewrite:
    def rewrite(expr: relax.Expr, matches: Matches) -> relax.Expr:
        result = rule.rewrite(expr, matches)
        if isinstance(result, str):
            # rewrite_call revisits a declined match on every fixed-point round: count once
            key = (rule.name, result, hash(expr))
            if key not in seen:
                seen.add(key)
                stats.skipped[f"{rule.name}: {result}"] += 1
            return expr
        stats.fired[rule.name] += 1
        return result

    return rewrite


def report(ctx: Any, pass_name: str, stats: RuleStats) -> None:
    """Record ``stats`` under ``pass_name`` in ``ctx.report`` (no-op without a context)."""
    if ctx is not None:
        ctx.report[pass_name] = stats.to_json()


# ---------------------------------------------------------------- small helpers


def const_value(expr: relax.Expr) -> np.ndarray | None:
    """The numpy value of a Relax constant, or None if ``expr`` is not one."""
    # TVM 0.27: relax.Constant became tvm.ir.GenericConst with the tensor in .value
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    return None


def shape_of(expr: relax.Expr) -> tuple[int, ...] | None:
    """The static shape of a tensor expression, or None if unknown or symbolic."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        return None


def dtype_of(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)


def const(value: np.ndarray, dtype: str) -> relax.Constant:
    return relax.const(np.ascontiguousarray(value).astype(dtype), dtype)
