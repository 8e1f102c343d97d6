"""ONNX Runtime as the reference: outputs for correctness checks, timings for bench."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from edgec.errors import ModelError


def ort_session(model: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{model}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None


def run_onnxruntime(model: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ``model`` in ONNX Runtime, by output name."""
    sess = ort_session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, _feeds_for(sess, feeds))))


def time_onnxruntime(
    model: Path, feeds: dict[str, np.ndarray], repeat: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Milliseconds per run of ``model`` in ONNX Runtime (CPU, default threads)."""
    from edgec.targets.host.runtime import summarize_ms

    sess = ort_session(model)
    f = _feeds_for(sess, feeds)
    for _ in range(warmup):
        sess.run(None, f)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sess.run(None, f)
        times.append((time.perf_counter() - start) * 1e3)
    return summarize_ms(times)


def _feeds_for(sess: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    wanted = [i.name for i in sess.get_inputs()]
    missing = [n for n in wanted if n not in feeds]
    if missing:
        raise ModelError(f"ONNX Runtime model needs inputs {missing} that the package lacks")
    return {n: feeds[n] for n in wanted}
