"""Choosing which attention blocks to linearize, and measuring what it costs in error.

``auto`` mode, per block (all numbers measured, none assumed):

1. Tap the block's inputs (q', k, v, key bias) and its softmax output on every
   calibration input: one run of an instrumented copy of the model.
2. Evaluate each candidate on those tensors with the numpy twins of the lowerings
   (``attention_reference``): FAVOR+ m in 16..256, Nystrom l in 8..64 (dividing N).
   Block error = ||y_linear - y_softmax||_F / ||y_softmax||_F where y is the block's
   result after its output projection (head merge, ``@ W + b``; ``attention_match``),
   or softmax.V itself when no projection is recognised (the report says which). The
   error of a set of samples is the largest per-sample error, not a pooled mean, so
   one badly served input is not averaged away.
3. Per variant keep the smallest m/l whose error meets the *planning* budget.
4. Keep it only if the measured standalone block is faster on the target than the
   softmax block at the same shape (``attention_cost``), unless ``force:``.
5. Across blocks, accept greedily by FLOPs saved per unit error while the sum of
   block errors stays within the planning budget (a first-order bound on the output
   error), then measure the real model-output error (same definition, over all
   outputs) and drop the least profitable block until it is within it. A block whose
   first choice no longer fits what is left takes its cheapest candidate that does
   (a larger m/l), if that one is also measured faster.

Safety margin: the planning budget is ``PLAN_FRACTION`` (half) of the budget the user
gave. Errors measured on a handful of calibration inputs are estimates: on the
two-block synthetic encoder of tests/passes/test_linear_attention_heldout.py (N = 256,
smooth inputs, 4 calibration and 2 held-out samples) Nystrom blocks at 0.0109, 0.0298
and 0.0093 on the worst calibration sample measured 0.018, 0.044 and 0.0166 on a
held-out one (up to 1.8x). Planning at the full budget exceeds it there: with budget
0.012 it rewrites the first block (0.0109) and the held-out error is 0.018. Planning at
half of it keeps held-out errors within the budget in those tests. It is a margin, not
a guarantee: inputs unlike the calibration set can still do worse, which is why the
report gives the measured numbers.

elu+1 is never chosen automatically: it is not an approximation of softmax.
Nothing here is exact for a trained model; the report gives the numbers and the
reason for every block left as softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tvm
from edgec.passes import attention_cost as cost
from edgec.passes import attention_reference as ref
from edgec.passes import linear_attention as la
from edgec.passes.attention_match import AttentionBlock, find_attention_blocks
from tvm import relax

FAVOR_M = (16, 32, 64, 128, 256)
NYSTROM_L = (8, 16, 32, 64)
MAX_CALIB = 4  # each sample is a full model run; the tapped tensors are what matter
MAX_BACKOFF = 3  # model-output re-measurements before giving up on the plan
PLAN_FRACTION = 0.5  # auto plans against this fraction of the budget (module docstring)

Taps = list[dict[str, np.ndarray]]  # per block: q, k, v, kb (or absent), o


# ------------------------------------------------------------------------------ entry


def run(mod: tvm.IRModule, mode: la.Mode, target: Any = None,
        calib: Sequence[dict[str, np.ndarray]] | None = None
        ) -> tuple[tvm.IRModule, dict[str, Any]]:
    """Apply ``mode`` to ``mod``; returns the new module and the pass report."""
    blocks = find_attention_blocks(mod)
    report: dict[str, Any] = {
        "mode": mode.kind if mode.kind != "force" else f"force:{mode.variant}",
        "error_budget": mode.error_budget,
        "blocks": [b.summary() for b in blocks],
        "error_definition": ("relative Frobenius error, largest over the calibration "
                             "samples; blocks after their output projection"),
    }
    if mode.kind == "off" or not blocks:
        report["changed"] = []
        return mod, report
    calib = list(calib or [])[:MAX_CALIB]
    taps: Taps = []
    reference: list[np.ndarray] = []  # the model's own outputs per sample, from the same run
    if mode.kind == "force":
        plan = _force_plan(blocks, mode, report)
        if calib and plan:
            taps, reference = tap_run(mod, blocks, calib, target)
    else:
        if not calib:
            for entry in report["blocks"]:
                entry["decision"] = "softmax"
                entry["why"] = ("auto needs calibration inputs to measure the error "
                                "(ctx.calib); force:<variant> rewrites without them")
            report["changed"] = []
            return mod, report
        report["planning_budget"] = planning_budget(mode)
        taps, reference = tap_run(mod, blocks, calib, target)
        plan = _auto_plan(blocks, taps, mode, target, report)
    new = la.apply_plan(mod, plan)
    if calib and plan:
        err = output_error(mod, new, calib, target, reference)
        if mode.kind == "auto":
            new, plan, err = _back_off(mod, new, plan, err, mode, calib, target, report,
                                       reference)
        else:
            _forced_block_errors(blocks, taps, plan, report)
        report["model_output_rel_error"] = err
        report["calib_samples"] = len(calib)
    for i, c in plan.items():
        entry = report["blocks"][i]
        if "errors" in entry:
            entry["error"] = entry["errors"][c.label()]
    report["changed"] = [f"attn{i}: {c.label()}" for i, c in sorted(plan.items())]
    return new, report


def _forced_block_errors(blocks: list[AttentionBlock], taps: Taps, plan: dict[int, la.Choice],
                         report: dict[str, Any]) -> None:
    """Measure each forced block's error on the calibration inputs, for the report."""
    for b, tap in zip(blocks, taps, strict=True):
        if b.index not in plan:
            continue
        c = plan[b.index]
        approx = la.reference(c, tap["q"], tap["k"], tap["v"], tap.get("kb"))
        report["blocks"][b.index].update(error_at=error_site(b), errors={
            c.label(): round(block_error(b, approx, tap["o"]), 5)})


# ------------------------------------------------------------------------------ force


def default_param(variant: str, n: int) -> int:
    """FAVOR+ m = 128; Nystrom l = the largest divisor of N not above 32."""
    if variant == "nystrom":
        return max(d for d in range(1, min(32, n) + 1) if n % d == 0)
    return la.DEFAULT_PARAM[variant]


def _force_plan(blocks: list[AttentionBlock], mode: la.Mode, report: dict[str, Any]
                ) -> dict[int, la.Choice]:
    plan: dict[int, la.Choice] = {}
    for b, entry in zip(blocks, report["blocks"]):
        param = mode.param if mode.param is not None else default_param(mode.variant, b.n_key)
        choice = la.Choice(mode.variant, param, mode.seed)
        why = la.check(b, choice)
        if why:
            entry.update(decision="softmax", why=why)
            continue
        plan[b.index] = choice
        entry.update(decision=choice.label(), why="forced", **choice.to_json())
    return plan


# ------------------------------------------------------------------------------- auto


def planning_budget(mode: la.Mode) -> float:
    """The error auto mode allows itself on calibration inputs (the safety margin)."""
    return mode.error_budget * PLAN_FRACTION


def _auto_plan(blocks: list[AttentionBlock], taps: Taps, mode: la.Mode, target: Any,
               report: dict[str, Any]) -> dict[int, la.Choice]:
    budget = planning_budget(mode)
    offers: list[tuple[float, float, int, la.Choice]] = []  # (ratio, err, block, choice)
    fallback: dict[int, tuple[list[tuple[la.Choice, float]], dict[str, float]]] = {}
    for b, entry, tap in zip(blocks, report["blocks"], taps):
        entry["decision"] = "softmax"
        if not b.linearizable:
            entry["why"] = b.reason
            continue
        errors = candidate_errors(b, tap, mode.seed)
        entry["error_at"] = error_site(b)
        entry["errors"] = {c.label(): round(e, 5) for c, e in errors}
        entry["softmax_tap_check"] = float(np.max(np.abs(
            ref.softmax_attention(tap["q"], tap["k"], tap["v"], tap.get("kb")) - tap["o"])))
        meeting = _smallest_meeting(errors, budget)
        shape = cost.block_shape(b)
        measured = cost.can_measure(target)
        # time the softmax block and, per variant, the candidate that meets the budget
        # (or the most accurate one, so the report says how far off it is)
        shown = meeting or _best_per_variant(errors)
        lat = {"softmax": _latency(shape, None, target, measured)}
        for c, _ in shown:
            lat[c.label()] = _latency(shape, c, target, measured)
        entry["latency_ms" if measured else "flops_proxy"] = {
            k: round(v * 1e3, 4) if measured else v for k, v in lat.items()}
        if not meeting:
            best = ", ".join(f"{c.label()} {e:.3g}" for c, e in _best_per_variant(errors))
            entry["why"] = (f"no variant meets the error budget {mode.error_budget} (planning "
                            f"at {budget:.3g}): best {best}")
            if all(lat[c.label()] >= lat["softmax"] for c, _ in shown):
                entry["why"] += (f"; none is faster either at N={b.n_key}: softmax "
                                 f"{_fmt(lat['softmax'], measured)}")
            continue
        faster = [(c, e) for c, e in meeting if lat[c.label()] < lat["softmax"]]
        if not faster:
            slow = ", ".join(f"{c.label()} {_fmt(lat[c.label()], measured)}" for c, _ in meeting)
            entry["why"] = (f"not faster on the target at N={b.n_key}: softmax "
                            f"{_fmt(lat['softmax'], measured)} vs {slow}")
            continue
        c, e = max(faster, key=lambda ce: lat["softmax"] - lat[ce[0].label()])
        saved = cost.flops(shape, None) - cost.flops(shape, c)
        offers.append((saved / max(e, 1e-9), e, b.index, c))
        fallback[b.index] = (errors, lat)
    plan: dict[int, la.Choice] = {}
    spent = 0.0
    for _, e, idx, c in sorted(offers, key=lambda o: -o[0]):
        entry = report["blocks"][idx]
        if spent + e > budget:
            alt = _larger_fitting(blocks[idx], *fallback[idx], budget - spent, target)
            if alt is None:
                entry["why"] = (f"error budget used by other blocks ({spent:.3g} + {e:.3g} "
                                f"> planning budget {budget:.3g})")
                continue
            c, e = alt
            if cost.can_measure(target):
                entry.setdefault("latency_ms", {})[c.label()] = round(
                    fallback[idx][1][c.label()] * 1e3, 4)
        spent += e
        plan[idx] = c
        entry.update(decision=c.label(), why=f"error {e:.3g} <= planning budget {budget:.3g}, "
                     "faster", **c.to_json())
    return plan


def _larger_fitting(block: AttentionBlock, errors: list[tuple[la.Choice, float]],
                   lat: dict[str, float], room: float, target: Any
                   ) -> tuple[la.Choice, float] | None:
    """The cheapest candidate (FLOPs) whose error fits in ``room`` and that is measured
    faster than softmax: a larger m/l when the first choice no longer fits."""
    shape = cost.block_shape(block)
    measured = cost.can_measure(target)
    for c, e in sorted(errors, key=lambda ce: cost.flops(shape, ce[0])):
        if e > room:
            continue
        if c.label() not in lat:
            lat[c.label()] = _latency(shape, c, target, measured)
        if lat[c.label()] < lat["softmax"]:
            return c, e
    return None


def _back_off(mod: tvm.IRModule, new: tvm.IRModule, plan: dict[int, la.Choice], err: float,
              mode: la.Mode, calib: list[dict[str, np.ndarray]], target: Any,
              report: dict[str, Any], reference: list[np.ndarray]
              ) -> tuple[tvm.IRModule, dict[int, la.Choice], float]:
    """Drop the last-accepted blocks until the measured model-output error fits."""
    order = list(plan)  # insertion order = greedy order, most profitable first
    rounds = 0
    limit = planning_budget(mode)
    while plan and err > limit:
        rounds += 1
        idx = order.pop()
        report["blocks"][idx].update(
            decision="softmax",
            why=f"dropped: model output error {err:.3g} > planning budget {limit:.3g}")
        plan = {i: plan[i] for i in order}
        if rounds >= MAX_BACKOFF and plan:
            for i in order:
                report["blocks"][i].update(decision="softmax", why="dropped: back-off limit")
            plan = {}
        new = la.apply_plan(mod, plan)
        err = output_error(mod, new, calib, target, reference) if plan else 0.0
    return new, plan, err


def _fmt(v: float, measured: bool) -> str:
    return f"{v * 1e3:.3g} ms" if measured else f"{v:.3g} FLOP"


def _latency(shape: cost.Shape, c: la.Choice | None, target: Any, measured: bool) -> float:
    return cost.measure(shape, c, target) if measured else cost.flops(shape, c)


def candidates(block: AttentionBlock, seed: int = 0) -> list[la.Choice]:
    out = [la.Choice("favor", m, seed) for m in FAVOR_M]
    out += [la.Choice("nystrom", l) for l in NYSTROM_L if l < block.n_key]
    return [c for c in out if not la.check(block, c)]


def candidate_errors(block: AttentionBlock, tap: dict[str, np.ndarray], seed: int = 0
                     ) -> list[tuple[la.Choice, float]]:
    """``block_error`` of every candidate on the tapped tensors."""
    return [(c, block_error(block, la.reference(c, tap["q"], tap["k"], tap["v"], tap.get("kb")),
                            tap["o"])) for c in candidates(block, seed)]


def block_error(block: AttentionBlock, approx: np.ndarray, exact: np.ndarray) -> float:
    """Largest relative error of a block's result over samples (axis 0).

    Measured after the block's output projection when it has one (``W`` mixes heads and
    value channels, so this is the error the rest of the model sees), else at softmax.V.
    """
    if block.projection is not None:
        approx = block.projection.apply(approx, lead=1)
        exact = block.projection.apply(exact, lead=1)
    return worst_sample_error(approx, exact)


def error_site(block: AttentionBlock) -> str:
    """Where ``block_error`` is measured, for the report."""
    if block.projection is not None:
        return f"after the output projection ({block.projection.out.name})"
    return f"softmax.V: no output projection recognised ({block.projection_note})"


def _smallest_meeting(errors: list[tuple[la.Choice, float]], budget: float
                      ) -> list[tuple[la.Choice, float]]:
    best: dict[str, tuple[la.Choice, float]] = {}
    for c, e in errors:  # candidates are listed smallest size first
        if e <= budget and c.variant not in best:
            best[c.variant] = (c, e)
    return list(best.values())


def _best_per_variant(errors: list[tuple[la.Choice, float]]) -> list[tuple[la.Choice, float]]:
    best: dict[str, tuple[la.Choice, float]] = {}
    for c, e in errors:
        if c.variant not in best or e < best[c.variant][1]:
            best[c.variant] = (c, e)
    return list(best.values())


def rel_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """||approx - exact||_F / ||exact||_F."""
    den = float(np.linalg.norm(exact.astype(np.float64)))
    num = float(np.linalg.norm((approx - exact).astype(np.float64)))
    return num / den if den > 0 else num


def worst_sample_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """``rel_error`` of each sample (axis 0), the largest."""
    return max(rel_error(a, e) for a, e in zip(approx, exact, strict=True))


# ------------------------------------------------------------------------ measurement


@relax.expr_functor.mutator
class _Tapper(relax.PyExprMutator):
    """Expose each block's inputs and output as function outputs."""

    def __init__(self, mod: tvm.IRModule, blocks: list[AttentionBlock]):
        super().__init__(mod)
        self.by_var = {b.out: b for b in blocks}
        self.taps: list[relax.Var] = []

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        super().visit_var_binding_(binding)
        block = self.by_var.get(binding.var)
        if block is None:
            return
        emit = self.builder_.emit
        q, k, v, kb = la.block_inputs(emit, block, self.visit_expr)
        for x in (q, k, v, kb, self.visit_expr(binding.var)):
            if x is not None:
                self.taps.append(self.builder_.emit_output(x))


def tap_blocks(mod: tvm.IRModule, blocks: list[AttentionBlock],
               calib: list[dict[str, np.ndarray]], target: Any = None) -> Taps:
    """Per block, q/k/v/kb/o stacked over the calibration samples (new axis 0)."""
    return tap_run(mod, blocks, calib, target)[0]


def tap_run(mod: tvm.IRModule, blocks: list[AttentionBlock],
            calib: list[dict[str, np.ndarray]], target: Any = None
            ) -> tuple[Taps, list[np.ndarray]]:
    """``tap_blocks``, plus the model's own outputs per sample (flattened together), from
    the same compiled run so the reference for ``output_error`` costs no second build."""
    tapper = _Tapper(mod, blocks)
    func = tapper.visit_expr(mod["main"])
    body = func.body
    # a SeqExpr built by hand has no type until normalized
    seq = relax.BlockBuilder().normalize(
        relax.SeqExpr(body.blocks, relax.Tuple([*tapper.taps, body.body])))
    tapped = relax.Function(func.params, seq, attrs=func.attrs)
    tmod = mod.clone()
    tmod["main"] = tapped
    outs = _run(tmod, calib, target)
    result: Taps = []
    pos = 0
    for b in blocks:
        names = ["q", "k", "v"] + (["kb"] if b.mask is not None else []) + ["o"]
        result.append({n: np.stack([o[pos + i] for o in outs])
                       for i, n in enumerate(names)})
        pos += len(names)
    return result, [np.concatenate([x.ravel() for x in o[pos:]]) for o in outs]


def output_error(mod: tvm.IRModule, new: tvm.IRModule, calib: list[dict[str, np.ndarray]],
                 target: Any = None, reference: list[np.ndarray] | None = None) -> float:
    """Relative error of ``new``'s outputs (all of them, flattened together) against
    ``mod``'s (or ``reference``, as ``tap_run`` returns them), the largest over the
    samples in ``calib``."""
    a = reference or [np.concatenate([x.ravel() for x in o]) for o in _run(mod, calib, target)]
    b = [np.concatenate([x.ravel() for x in o]) for o in _run(new, calib, target)]
    return max(rel_error(y, x) for x, y in zip(a, b, strict=True))


def _run(mod: tvm.IRModule, calib: list[dict[str, np.ndarray]], target: Any
         ) -> list[list[np.ndarray]]:
    from edgec.driver import compile_relax
    from edgec.targets import get_target

    desc = target if target is not None and cost.can_measure(target) else get_target("host")
    vm = relax.VirtualMachine(compile_relax(mod, desc), tvm.cpu())
    names = [p.name for p in mod["main"].params]
    outs = []
    for feeds in calib:
        res = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(feeds[n])) for n in names])
        outs.append(_flatten(res))
    return outs


def _flatten(x: Any) -> list[np.ndarray]:
    if hasattr(x, "numpy"):
        return [x.numpy()]
    return [a for item in x for a in _flatten(item)]
