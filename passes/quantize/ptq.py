"""Post-training int8 quantization, end to end: prepare -> calibrate -> QDQ -> measure.

    prepared = prepare(float model)         # BN folded, opset 13, Gemm -> MatMul
    anchors  = find_anchors(prepared)       # conv2d / matmul with constant weights
    params   = calibrate(prepared, anchors, calib feeds, method)
    qdq      = to_qdq(prepared, anchors, params, include)   # the QDQ ONNX model

The QDQ model is the single carrier of the quantization: ONNX Runtime runs it, and
edgec imports it and lowers it with the ``quantize-int8`` pass to integer kernels.

The method ``auto`` calibrates once and keeps whichever of the percentile and minmax
ranges gives the better held-out accuracy (worst output's cosine): percentile clips
rare outliers, which suits a CNN, while a transformer carries a few very large
activations at some tokens that minmax keeps (MiniLM, 8 sentences: mean embedding
cosine 0.792 with percentile, 0.948 with minmax, which auto picks). The reported
accuracy is then measured on the samples that chose it, one choice of two. The default
stays percentile: on PP-OCR det, auto picks minmax, whose int8 map agrees less closely
with ONNX Runtime's on the same QDQ model.

Accuracy is measured on the held-out feeds: per output cosine / SNR / max abs error
of the QDQ model against the float one; the sensitivity table quantizes one layer
at a time. With a budget, the most sensitive layers are kept in float, one by one in
table order, until the budget holds. In the npu style (which also quantizes the
element-wise activations between layers, so an accelerator can run them) a budget that
does not hold even so is searched again with those activations in float (the anchors
style): a residual stream with outlier channels that one int8 scale cannot hold, where
NPU ops read it (before layer norm, a CPU op, it is float anyway:
``onnx_graph.npu_tensors``). If it only holds with every layer in float the budget is
impossible and the error carries the table. (Measured with ONNX Runtime on the QDQ
model, 10-100x faster than an untuned build; edgec's integer kernels agree with it to
within one quantization step, see tests/passes/quantize.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from edgec.errors import EdgecError
from edgec.passes.quantize.accuracy import Budget, compare, format_table
from edgec.passes.quantize.calibrate import calibrate, calibrate_auto, session
from edgec.passes.quantize.observers import DEFAULT_METHOD
from edgec.passes.quantize.onnx_graph import Anchor, find_anchors, npu_tensors, prepare
from edgec.passes.quantize.qdq import to_qdq
from edgec.passes.quantize.scheme import ActParams

Feed = dict[str, np.ndarray]


@dataclass
class QuantizeResult:
    """The QDQ model and everything that went into it."""

    model: onnx.ModelProto
    prepared: onnx.ModelProto
    anchors: list[Anchor]
    params: dict[str, ActParams]
    kept_float: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        rows = self.report.get("sensitivity", [])
        return format_table(rows, ["layer", "kind", "cosine", "snr_db", "max_abs"]) if rows else ""


def run(model: onnx.ModelProto, feeds: Sequence[Feed]) -> list[Feed]:
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(None, f))) for f in feeds]


def _worst(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {
        "cosine": min(m["cosine"] for m in metrics.values()),
        "snr_db": min(m["snr_db"] for m in metrics.values()),
        "max_abs": max(m["max_abs"] for m in metrics.values()),
    }


def sensitivity(prepared: onnx.ModelProto, anchors: Sequence[Anchor],
                params: dict[str, ActParams], held_out: Sequence[Feed],
                reference: Sequence[Feed]) -> list[dict[str, Any]]:
    """One row per layer, that layer alone in int8; most sensitive (lowest cosine) first."""
    rows = []
    for a in anchors:
        got = run(to_qdq(prepared, anchors, params, include={a.name}), held_out)
        rows.append({"layer": a.name, "kind": a.kind, **_worst(compare(reference, got))})
    rows.sort(key=lambda r: (r["cosine"], r["snr_db"]))
    return rows


def quantize_onnx(model: onnx.ModelProto, calib: Sequence[Feed], held_out: Sequence[Feed],
                  method: str = DEFAULT_METHOD, budget: Budget | None = None,
                  with_sensitivity: bool = True, style: str = "anchors") -> QuantizeResult:
    """Quantize a simplified, static-shaped float model to a QDQ model (see module doc).

    ``style``: ``"anchors"`` quantizes conv / matmul layers (their inputs and outputs);
    ``"npu"`` also the inputs and outputs of the element-wise ops, pools and reshapes
    between them (``onnx_graph.npu_tensors``), so an int8 accelerator that offloads QDQ
    groups (edge-npu) can run them too."""
    if style not in ("anchors", "npu"):
        raise EdgecError(f"quantize: unknown QDQ style {style!r}")
    if not calib:
        raise EdgecError("quantize: no calibration samples")
    if not held_out:
        raise EdgecError("quantize: no held-out samples to measure accuracy on")
    prepared = prepare(model, conv_add=style == "npu")
    anchors = find_anchors(prepared, transposed=style == "npu")
    if not anchors:
        raise EdgecError("quantize: the model has no conv2d or matmul with constant weights")
    extra = npu_tensors(prepared, anchors) if style == "npu" else []
    reference = run(prepared, held_out)

    def accuracy(p: dict[str, ActParams], include: set[str] | None = None,
                 extra: Sequence[str] = ()) -> dict[str, dict[str, float]]:
        return compare(reference, run(to_qdq(prepared, anchors, p, include, extra), held_out))

    choice: dict[str, Any] | None = None
    all_int8: dict[str, dict[str, float]] | None = None  # every layer int8, with ``extra``
    if method == "auto":
        cands = calibrate_auto(prepared, anchors, calib, extra)
        measured = {m: accuracy(p, extra=extra) for m, p in cands.items()}
        scores = {m: _worst(v) for m, v in measured.items()}
        method = max(scores, key=lambda m: (scores[m]["cosine"], scores[m]["snr_db"]))
        params, all_int8 = cands[method], measured[method]
        choice = {"chosen": method, "held_out_cosine": {m: v["cosine"]
                                                        for m, v in scores.items()}}
    else:
        params = calibrate(prepared, anchors, calib, method, extra)
    rows = sensitivity(prepared, anchors, params, held_out, reference) if (
        with_sensitivity or budget is not None) else []

    def search(extra: list[str], first: dict[str, dict[str, float]] | None = None
               ) -> tuple[list[str], dict[str, Any], list[dict[str, Any]], bool]:
        """Layers kept in float, most sensitive first, until the budget is met: (kept,
        metrics, tried, met). ``first``: the accuracy with every layer in int8, if known."""
        kept: list[str] = []
        metrics = first if first is not None else accuracy(params, extra=extra)
        tried = [{"kept_float": 0, "extra": len(extra), **_worst(metrics)}]
        if budget is None or budget.met(metrics):
            return kept, metrics, tried, True
        for row in rows:
            kept.append(row["layer"])
            if len(kept) == len(anchors):
                return kept, metrics, tried, False
            metrics = accuracy(params, {a.name for a in anchors} - set(kept), extra)
            tried.append({"kept_float": len(kept), "extra": len(extra), **_worst(metrics)})
            if budget.met(metrics):
                return kept, metrics, tried, True
        return kept, metrics, tried, False

    kept, metrics, tried, met = search(extra, all_int8)
    extra_float: list[str] = []
    if not met and extra:
        # the element-wise tensors between the layers (the residual stream of a
        # transformer) may be what int8 cannot hold: leave them in float, as the anchors
        # style does, and search again
        extra_float, extra = extra, []
        kept, metrics, more, met = search(extra)
        tried += more
    if not met:
        raise EdgecError(
            f"quantize: accuracy budget {budget} cannot be met with any layer in int8 "
            f"(best with one layer in float: {tried[-1]['cosine']:.5f} cosine); "
            "sensitivity per layer (one layer in int8 at a time):\n"
            + format_table(rows, ["layer", "kind", "cosine", "snr_db", "max_abs"])
        )
    include = {a.name for a in anchors} - set(kept)
    qdq = to_qdq(prepared, anchors, params, include, extra)
    report = {
        "method": method,
        "auto": choice,  # how ``auto`` chose ``method`` (None: the method was given)
        "style": style,
        "samples": {"calib": len(calib), "held_out": len(held_out)},
        "layers": {"int8": len(include), "float": len(kept), "total": len(anchors)},
        "kept_float": kept,
        # the npu style's element-wise tensors left in float to meet the budget
        "element_wise_float": len(extra_float),
        "budget": None if budget is None else str(budget),
        "accuracy": metrics,
        "budget_search": tried,
        "sensitivity": rows,
        "params": {t: p.to_json() for t, p in params.items()},
    }
    return QuantizeResult(qdq, prepared, anchors, params, kept, report)
