"""Calibrate: run the float model on calibration feeds and feed each observer.

The float model runs in ONNX Runtime with every tensor to observe added as a graph
output (the "instrumented" model). ONNX Runtime rather than a TVM build because
calibration and the sensitivity sweep run the float graph hundreds of times and an
untuned TVM CPU build is 30-100x slower (DESIGN.md: MiniLM 1.50 s vs 12.6 ms); the
numbers observed are the same float values either way (edgec's build matches ONNX
Runtime to ~1e-6).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from edgec.passes.quantize.observers import Observer, make_observer
from edgec.passes.quantize.onnx_graph import Anchor
from edgec.passes.quantize.scheme import ActParams, act_params
from onnx import TensorProto, helper


def session(model: onnx.ModelProto) -> Any:
    """A quiet single-threaded-per-op ONNX Runtime session for ``model``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # no "removing unused initializer" noise
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def activation_tensors(anchors: Iterable[Anchor]) -> list[str]:
    """Every tensor that gets int8 parameters: each anchor's input and output."""
    seen: dict[str, None] = {}
    for a in anchors:
        seen.setdefault(a.x)
        seen.setdefault(a.y)
    return list(seen)


def instrumented(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``tensors`` (graph inputs excepted)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inputs = {i.name for i in out.graph.input}
    present = {o.name for o in out.graph.output}
    for t in tensors:
        if t not in inputs and t not in present:
            out.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    return out


def observe(model: onnx.ModelProto, tensors: Sequence[str],
            feeds: Sequence[dict[str, np.ndarray]], method: str) -> dict[str, Observer]:
    """One observer per tensor, fed with its values on every feed."""
    if not feeds:
        raise ValueError("no calibration feeds")
    sess = session(instrumented(model, tensors))
    names = [o.name for o in sess.get_outputs()]
    observers = {t: make_observer(method) for t in tensors}
    for feed in feeds:
        values = dict(zip(names, sess.run(None, feed)))
        values.update(feed)
        for t, obs in observers.items():
            obs.observe(values[t])
    return observers


def calibrate_auto(model: onnx.ModelProto, anchors: Sequence[Anchor],
                   feeds: Sequence[dict[str, np.ndarray]],
                   extra: Sequence[str] = ()) -> dict[str, dict[str, ActParams]]:
    """Parameters by the percentile and by the minmax method (what ``auto`` chooses
    between) from one pass over ``feeds``: the percentile observer also keeps each
    tensor's min and max."""
    tensors = list(dict.fromkeys([*activation_tensors(anchors), *extra]))
    observers = observe(model, tensors, feeds, "percentile")
    return {"percentile": {t: obs.qparams() for t, obs in observers.items()},
            "minmax": {t: act_params(obs.lo, obs.hi) for t, obs in observers.items()}}


def calibrate(model: onnx.ModelProto, anchors: Sequence[Anchor],
              feeds: Sequence[dict[str, np.ndarray]], method: str,
              extra: Sequence[str] = ()) -> dict[str, ActParams]:
    """int8 parameters of every anchor input and output (and of ``extra`` tensors),
    chosen by ``method``."""
    tensors = list(dict.fromkeys([*activation_tensors(anchors), *extra]))
    observers = observe(model, tensors, feeds, method)
    return {t: obs.qparams() for t, obs in observers.items()}
