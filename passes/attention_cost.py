"""Cost model for linear attention: measured block latency on the target, cached.

The decision "is this rewrite faster?" depends on N, head dim, the variant's size
and on how well the target's kernels run each op mix, which FLOP counts predict
poorly (at N = 128 the N x N softmax is a few small matmuls while FAVOR+ adds exps on
an N x m tensor). So we compile one standalone block per (shape, variant), time it
with the VM's time evaluator on the target, and cache the median in
``~/.cache/edgec/attention-cost.json`` keyed by target and shape. Targets that
cannot run here (arm-cpu without a device, edge-npu) fall back to FLOP counts, and
the report says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from edgec.passes import linear_attention as la
from tvm import relax

_CACHE_ENV = "EDGEC_CACHE_DIR"
# Bump when lowerings or default schedules change: cached timings would be stale.
_COST_VERSION = 2  # 2: timed with edgec's CPU schedules (1 timed TVM's plain loops)


@dataclass(frozen=True)
class Shape:
    """One attention block's shape: leading dims, queries, keys, head dim, value dim."""

    batch: tuple[int, ...]
    n_query: int
    n_key: int
    head_dim: int
    value_dim: int
    masked: bool

    def key(self) -> str:
        b = "x".join(map(str, self.batch))
        return f"{b}:{self.n_query}x{self.n_key}:d{self.head_dim}:v{self.value_dim}:m{int(self.masked)}"


def block_shape(block: Any) -> Shape:
    return Shape(tuple(block.batch_shape), block.n_query, block.n_key, block.head_dim,
                 block.value_dim, block.mask is not None)


# ------------------------------------------------------------------- standalone blocks


def standalone(shape: Shape, choice: la.Choice | None) -> tvm.IRModule:
    """``main(q, k, v[, kb]) -> o``: softmax attention (choice None) or a linear variant."""
    b = shape.batch
    params = [
        relax.Var("q", relax.TensorType([*b, shape.n_query, shape.head_dim], "float32")),
        relax.Var("k", relax.TensorType([*b, shape.n_key, shape.head_dim], "float32")),
        relax.Var("v", relax.TensorType([*b, shape.n_key, shape.value_dim], "float32")),
    ]
    if shape.masked:
        params.append(relax.Var("kb", relax.TensorType([*b[:-1], 1, 1, shape.n_key], "float32")
                                if b else relax.TensorType([1, shape.n_key], "float32")))
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            q, k, v = params[:3]
            kb = params[3] if shape.masked else None
            if choice is None:
                out = softmax_block(bb.emit, q, k, v, kb)
            else:
                out = la.lower(choice, bb.emit, q, k, v, kb)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    return bb.get()


def softmax_block(emit: la.Emit, q: relax.Expr, k: relax.Expr, v: relax.Expr,
                  kb: relax.Expr | None) -> relax.Expr:
    """``softmax(q k^T + kb) v`` as exporters write it (the O(N^2) baseline)."""
    s = relax.op.matmul(q, la._t(k))
    if kb is not None:
        s = relax.op.add(s, kb)
    return relax.op.matmul(emit(relax.op.nn.softmax(emit(s), -1)), v)


def random_inputs(shape: Shape, seed: int = 0, logit_scale: float = 1.0,
                  pad: int = 0) -> list[np.ndarray]:
    """q, k, v (and kb with the last ``pad`` keys masked) for a standalone block."""
    rng = np.random.default_rng(seed)
    d = shape.head_dim
    s = logit_scale / d ** 0.25  # q.k ~ N(0, logit_scale^2)
    q = (rng.standard_normal((*shape.batch, shape.n_query, d)) * s).astype(np.float32)
    k = (rng.standard_normal((*shape.batch, shape.n_key, d)) * s).astype(np.float32)
    v = rng.standard_normal((*shape.batch, shape.n_key, shape.value_dim)).astype(np.float32)
    out = [q, k, v]
    if shape.masked:
        kb = np.zeros((*shape.batch[:-1], 1, 1, shape.n_key) if shape.batch else
                      (1, shape.n_key), np.float32)
        if pad:
            kb[..., -pad:] = np.finfo(np.float32).min
        out.append(kb)
    return out


# ------------------------------------------------------------------------- measuring


def flops(shape: Shape, choice: la.Choice | None) -> float:
    """Multiply-adds x 2 of the block (dominant terms), per the formulas above."""
    bh = float(np.prod(shape.batch)) if shape.batch else 1.0
    nq, n, d, dv = shape.n_query, shape.n_key, shape.head_dim, shape.value_dim
    if choice is None:
        return bh * (2 * nq * n * d + 2 * nq * n * dv + 5 * nq * n)
    if choice.variant == "favor":
        m = choice.param
        return bh * (2 * (nq + n) * d * m + 2 * n * m * dv + 2 * nq * m * dv + 6 * (nq + n) * m)
    if choice.variant == "nystrom":
        l = choice.param
        return bh * (2 * nq * l * d + 2 * l * l * d + 2 * l * n * d + 2 * l * n * dv
                     + 6 * 3 * 2 * l ** 3 + 2 * l * l * dv + 2 * nq * l * dv + 5 * (nq + n) * l)
    return bh * (2 * n * d * dv + 2 * nq * d * dv + 4 * (nq + n) * d)


def _cache_file() -> Path:
    base = Path(os.environ.get(_CACHE_ENV, Path.home() / ".cache" / "edgec"))
    return base / "attention-cost.json"


def _target_key(target: Any) -> str:
    spec = json.dumps(getattr(target, "tvm", {"kind": "llvm"}), sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def can_measure(target: Any) -> bool:
    return target is None or getattr(target, "family", "host") == "host"


def measure(shape: Shape, choice: la.Choice | None, target: Any = None,
            repeat: int = 5, use_cache: bool = True) -> float:
    """Median latency (s) of the standalone block on ``target`` (host when None)."""
    label = "softmax" if choice is None else choice.label()
    key = f"v{_COST_VERSION}|{_target_key(target)}|{shape.key()}|{label}"
    cache = _load_cache() if use_cache else {}
    if key in cache:
        return float(cache[key])
    from edgec.driver import compile_relax
    from edgec.targets import get_target

    # The same pipeline as `edgec build`: timing TVM's unscheduled loops would favour
    # whichever variant happens to suffer least from them.
    ex = compile_relax(standalone(shape, choice), target if target is not None else get_target("host"))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(a) for a in random_inputs(shape)]
    t0 = time.perf_counter()
    vm["main"](*args)  # warm-up, and a guess of how many runs fit in ~1 s
    once = time.perf_counter() - t0
    number = max(1, min(20, int(0.2 / max(once, 1e-6))))
    reps = repeat if once < 1.0 else 2
    res = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=reps)(*args)
    seconds = float(np.median(res.results))
    if use_cache:
        cache = _load_cache()
        cache[key] = seconds
        _save_cache(cache)
    return seconds


def _load_cache() -> dict[str, float]:
    try:
        return dict(json.loads(_cache_file().read_text()))
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict[str, float]) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: concurrent builds never read half a file
    except OSError:
        pass  # a read-only home only costs re-measuring
