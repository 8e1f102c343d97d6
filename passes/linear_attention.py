"""linear-attention: replace softmax attention by an O(N) factorized attention.

Before (as matched by ``attention_match``)::

    p = softmax(q @ kT * c + mask)          # (..., N, N) scores: O(N^2) time and memory
    o = p @ v

After (FAVOR+, m random features; Nystrom and elu+1 are analogous)::

    fq = exp(q' W^T - |q'|^2/2 - rowmax)    # (..., N, m), q' = q * c
    fk = exp(k W^T - |k|^2/2 + kb - max)    # kb: key-only mask bias, 0 or -3.4e38
    o  = fq @ (fk^T @ v) / (fq @ sum_j fk_j)  # O(N m d), no N x N tensor

Variants (all plain Relax ops, fp32 accumulation; formulas in attention_reference.py):

- ``favor``  : Performer FAVOR+ positive orthogonal random features, unbiased for the
  softmax kernel; error ~ 1/sqrt(m) times a factor that grows like exp(|q|^2+|k|^2),
  so it is good for small logits and poor for the peaked attention of trained models.
- ``nystrom``: Nystromformer with l segment-mean landmarks and a 6-step Newton-Schulz
  pseudo-inverse; training-free; exact when l = N and the iteration has converged.
- ``elu``    : elu(x)+1 feature map (Katharopoulos et al.); a different kernel, not an
  approximation of softmax, so only ``force:elu`` uses it.

Key padding masks stay exact: a key's features are multiplied by exp(kb_j) (0 for
padding) inside the exponent, so padding keys add nothing and do not move the
stabilizer. Query-dependent biases (causal, relative position) are left as softmax.

Options (``ctx.options``): ``linear_attention``: ``"auto"`` (default) or
``"force:favor"``, ``"force:favor:m=128"``, ``"force:nystrom:l=32"``, ``"force:elu"``,
``"off"``; ``attention_error`` (0.02): relative error budget for each rewritten block
(measured after its output projection, or at softmax.V when it has none) and for the
model output, largest over the calibration samples; auto mode plans at half of it as a
safety margin for inputs it has not seen; ``attention_seed`` (0): FAVOR+ feature seed.
Auto mode: see ``attention_auto``. Every run reports, per block, where its error was
measured (``error_at``), the error of the applied rewrite (``error``) and the
model-output error (``model_output_rel_error``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from edgec.errors import EdgecError
from edgec.passes import attention_reference as ref
from edgec.passes.attention_match import AttentionBlock, find_attention_blocks
from edgec.passes.registry import register_pass
from tvm import relax

R = relax.op
Emit = Callable[[relax.Expr], relax.Expr]
VARIANTS = ("favor", "nystrom", "elu")
DEFAULT_PARAM = {"favor": 128, "nystrom": 32, "elu": 0}
PARAM_NAME = {"favor": "m", "nystrom": "l", "elu": ""}


@dataclass(frozen=True)
class Choice:
    """A rewrite for one block: variant and its size (m features / l landmarks)."""

    variant: str
    param: int = 0
    seed: int = 0

    def label(self) -> str:
        if self.variant == "elu":
            return "elu"
        return f"{self.variant}({PARAM_NAME[self.variant]}={self.param})"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"variant": self.variant}
        if self.variant != "elu":
            d[PARAM_NAME[self.variant]] = self.param
        if self.variant == "favor":
            d["seed"] = self.seed
        return d


# --------------------------------------------------------------------- small helpers


def _shape(x: relax.Expr) -> tuple[int, ...]:
    return tuple(int(s) for s in x.ty.shape.values)


def _t(x: relax.Expr) -> relax.Expr:
    """Swap the last two axes."""
    r = len(_shape(x))
    return R.permute_dims(x, list(range(r - 2)) + [r - 1, r - 2])


def _f32(value: Any) -> relax.Expr:
    return relax.const(np.asarray(value, dtype=np.float32), "float32")


def _tiny() -> relax.Expr:
    return _f32(ref.TINY)


# ------------------------------------------------------------------------- variants
# Each takes emit (BlockBuilder.emit), q (..., Nq, d) with the scale applied,
# k (..., N, d), v (..., N, dv), kb (..., 1, N) or None, and returns o (..., Nq, dv).


def favor(emit: Emit, q: relax.Expr, k: relax.Expr, v: relax.Expr, kb: relax.Expr | None,
          m: int, seed: int = 0) -> relax.Expr:
    """FAVOR+ (see ``attention_reference.favor``)."""
    d = _shape(q)[-1]
    wt = _f32(ref.orthogonal_features(m, d, seed).T)  # (d, m)
    half = _f32(0.5)
    lq = emit(R.subtract(R.matmul(q, wt), R.multiply(half, R.sum(R.multiply(q, q), -1, True))))
    fq = emit(R.exp(R.subtract(lq, R.max(lq, -1, True))))
    lk = emit(R.subtract(R.matmul(k, wt), R.multiply(half, R.sum(R.multiply(k, k), -1, True))))
    if kb is not None:
        lk = emit(R.add(lk, _t(kb)))  # padding keys: exponent -3.4e38 -> feature 0
    fk = emit(R.exp(R.subtract(lk, R.max(lk, [-2, -1], True))))
    return _ratio(emit, fq, fk, v)


def _ratio(emit: Emit, fq: relax.Expr, fk: relax.Expr, v: relax.Expr) -> relax.Expr:
    """``fq (fk^T v) / (fq . sum_j fk_j)``: the O(N) contraction order."""
    kv = emit(R.matmul(_t(fk), v))  # (..., m, dv)
    z = emit(R.sum(fk, -2, True))  # (..., 1, m)
    den = emit(R.sum(R.multiply(fq, z), -1, True))  # (..., Nq, 1)
    return R.divide(emit(R.matmul(fq, kv)), R.maximum(den, _tiny()))


def _key_weights(emit: Emit, kb: relax.Expr) -> relax.Expr:
    return emit(R.exp(R.subtract(kb, R.max(kb, -1, True))))


def nystrom(emit: Emit, q: relax.Expr, k: relax.Expr, v: relax.Expr, kb: relax.Expr | None,
            landmarks: int, iters: int = 6) -> relax.Expr:
    """Nystrom attention (see ``attention_reference.nystrom``)."""
    qs, ks = _shape(q), _shape(k)
    n, d, l = ks[-2], ks[-1], landmarks
    seg = n // l
    ql = emit(R.mean(R.reshape(q, (*qs[:-2], l, seg, d)), -2))
    lb = None
    if kb is None:
        kl = emit(R.mean(R.reshape(k, (*ks[:-2], l, seg, d)), -2))
    else:
        w = _key_weights(emit, kb)  # (..., 1, N)
        kw = emit(R.multiply(k, _t(w)))
        ksum = emit(R.sum(R.reshape(kw, (*_shape(kw)[:-2], l, seg, d)), -2))
        cnt = emit(R.sum(R.reshape(w, (*_shape(w)[:-1], l, seg)), -1))  # (..., 1, l)
        kl = emit(R.divide(ksum, R.maximum(_t(cnt), _tiny())))
        lb = emit(R.where(R.greater(cnt, _f32(0)), _f32(0), _f32(ref.NEG)))
    klt = emit(_t(kl))
    f, a, b = R.matmul(q, klt), R.matmul(ql, klt), R.matmul(ql, _t(k))
    if lb is not None:
        f, a, b = R.add(f, lb), R.add(a, lb), R.add(b, kb)
    f, a, b = _softmax(emit, f), _softmax(emit, a), _softmax(emit, b)
    z = _pinv(emit, a, l, iters)
    return R.matmul(f, emit(R.matmul(z, emit(R.matmul(b, v)))))


def _softmax(emit: Emit, x: relax.Expr) -> relax.Expr:
    """Softmax spelled out, so ``find_attention_blocks`` never re-matches the rewrite."""
    e = emit(R.exp(R.subtract(x, R.max(x, -1, True))))
    return emit(R.divide(e, R.sum(e, -1, True)))


def _pinv(emit: Emit, a: relax.Expr, l: int, iters: int) -> relax.Expr:
    eye = np.eye(l, dtype=np.float32)
    i7, i13, i15 = _f32(7 * eye), _f32(13 * eye), _f32(15 * eye)
    norm = R.multiply(R.max(R.sum(a, -2, True), -1, True), R.max(R.sum(a, -1, True), -2, True))
    z = emit(R.divide(_t(a), norm))
    for _ in range(iters):
        az = emit(R.matmul(a, z))
        inner = emit(R.subtract(i15, R.matmul(az, R.subtract(i7, az))))
        z = emit(R.multiply(_f32(0.25), R.matmul(z, R.subtract(i13, R.matmul(az, inner)))))
    return z


def elu(emit: Emit, q: relax.Expr, k: relax.Expr, v: relax.Expr,
        kb: relax.Expr | None) -> relax.Expr:
    """elu(x)+1 linear attention (see ``attention_reference.elu``)."""
    def phi(x: relax.Expr) -> relax.Expr:
        return emit(R.where(R.greater(x, _f32(0)), R.add(x, _f32(1)),
                            R.exp(R.minimum(x, _f32(0)))))

    fq, fk = phi(q), phi(k)
    if kb is not None:
        fk = emit(R.multiply(fk, _t(_key_weights(emit, kb))))
    return _ratio(emit, fq, fk, v)


def lower(choice: Choice, emit: Emit, q: relax.Expr, k: relax.Expr, v: relax.Expr,
          kb: relax.Expr | None) -> relax.Expr:
    """Emit ``choice`` for one block; inputs other than fp32 are computed in fp32."""
    dtype = str(v.ty.dtype)
    if dtype != "float32":
        q, k, v = (emit(R.astype(x, "float32")) for x in (q, k, v))
    if choice.variant == "favor":
        out = favor(emit, q, k, v, kb, choice.param, choice.seed)
    elif choice.variant == "nystrom":
        out = nystrom(emit, q, k, v, kb, choice.param)
    elif choice.variant == "elu":
        out = elu(emit, q, k, v, kb)
    else:
        raise EdgecError(f"linear-attention: unknown variant {choice.variant!r}")
    return out if dtype == "float32" else R.astype(emit(out), dtype)


def reference(choice: Choice, q: np.ndarray, k: np.ndarray, v: np.ndarray,
              kb: np.ndarray | None) -> np.ndarray:
    """The numpy twin of ``lower`` (same formulas, same features)."""
    if choice.variant == "favor":
        w = ref.orthogonal_features(choice.param, q.shape[-1], choice.seed)
        return ref.favor(q, k, v, kb, w)
    if choice.variant == "nystrom":
        return ref.nystrom(q, k, v, kb, choice.param)
    return ref.elu(q, k, v, kb)


def check(block: AttentionBlock, choice: Choice) -> str:
    """Why ``choice`` cannot rewrite ``block`` ("" if it can)."""
    if not block.linearizable:
        return block.reason
    if block.n_query != block.n_key and choice.variant == "nystrom":
        return "nystrom needs as many queries as keys (cross-attention)"
    if choice.variant == "nystrom" and (
            not 0 < choice.param <= block.n_key or block.n_key % choice.param):
        return f"nystrom: l={choice.param} does not divide N={block.n_key}"
    if choice.variant == "favor" and choice.param <= 0:
        return "favor: m must be positive"
    return ""


# --------------------------------------------------------------------- block inputs


def block_inputs(emit: Emit, block: AttentionBlock, remap: Callable[[relax.Expr], relax.Expr]
                 ) -> tuple[relax.Expr, relax.Expr, relax.Expr, relax.Expr | None]:
    """Emit q' (scale folded), k (..., N, d), v and the key bias row kb (..., 1, N)."""
    q, k_t, v = remap(block.q), remap(block.k_t), remap(block.v)
    if block.scale_after != 1.0:
        q = emit(R.multiply(q, relax.const(block.scale_after, str(q.ty.dtype))))
    k = emit(_t(k_t))
    kb = None
    if block.mask is not None:
        kb = emit(_key_row(emit, remap(block.mask)))
        if block.mask_kind == "where":
            keep = kb if block.mask_keep_when else emit(R.logical_not(kb))
            kb = R.where(keep, _f32(0), _f32(np.finfo(np.float32).min))
        elif str(kb.ty.dtype) != "float32":
            kb = R.astype(kb, "float32")
        kb = emit(kb)
    return q, k, v, kb


def _key_row(emit: Emit, mask: relax.Expr) -> relax.Expr:
    """The mask at query 0, (..., 1, N): the same row for every query (key-only)."""
    shape = _shape(mask)
    if len(shape) < 2:
        return R.reshape(mask, (1, shape[0]) if shape else (1, 1))
    if shape[-2] == 1:
        return mask
    return R.strided_slice(mask, [len(shape) - 2], [0], [1])


# -------------------------------------------------------------------------- rewrite


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    """Replace the output binding of each chosen block by its linear lowering."""

    def __init__(self, mod: tvm.IRModule, plan: dict[Any, tuple[AttentionBlock, Choice]]):
        super().__init__(mod)
        self.plan = plan

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        item = self.plan.get(binding.var)
        if item is None:
            super().visit_var_binding_(binding)
            return
        block, choice = item
        emit = self.builder_.emit
        q, k, v, kb = block_inputs(emit, block, self.visit_expr)
        out = lower(choice, emit, q, k, v, kb)
        if isinstance(binding.var, relax.DataflowVar):
            new = self.builder_.emit(out, name_hint=binding.var.name)
        else:
            new = self.builder_.emit_output(out, name_hint=binding.var.name)
        self.set_var_remap(binding.var, new)


def apply_plan(mod: tvm.IRModule, plan: dict[int, Choice], func_name: str = "main"
               ) -> tvm.IRModule:
    """Rewrite the blocks ``plan`` names (by index) with their choices; others unchanged."""
    if not plan:
        return mod
    blocks = find_attention_blocks(mod, func_name)
    by_var: dict[Any, tuple[AttentionBlock, Choice]] = {}
    for b in blocks:
        if b.index in plan:
            why = check(b, plan[b.index])
            if why:
                raise EdgecError(f"linear-attention: {b.name}: {why}")
            by_var[b.out] = (b, plan[b.index])
    func = _Rewriter(mod, by_var).visit_expr(mod[func_name])
    out = mod.clone()
    out[func_name] = relax.analysis.remove_all_unused(func)
    return out


# ----------------------------------------------------------------------------- modes


@dataclass
class Mode:
    """Parsed ``linear_attention`` option."""

    kind: str  # "off", "auto", "force"
    variant: str = ""
    param: int | None = None
    error_budget: float = 0.02
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def parse_mode(options: dict[str, Any]) -> Mode:
    """``auto`` | ``off`` | ``force:<variant>[:m=<int>|:l=<int>]``."""
    text = str(options.get("linear_attention", "auto")).strip().lower()
    budget = float(options.get("attention_error", 0.02))
    seed = int(options.get("attention_seed", 0))
    if text in ("auto", "off"):
        return Mode(text, error_budget=budget, seed=seed)
    parts = text.split(":")
    if parts[0] != "force" or len(parts) < 2 or parts[1] not in VARIANTS:
        raise EdgecError(
            f"--linear-attention {text!r}: expected auto, off or force:<variant>[:m=N|:l=N] "
            f"with variant in {', '.join(VARIANTS)}")
    param = None
    for extra in parts[2:]:
        key, _, val = extra.partition("=")
        if key not in ("m", "l") or not val.isdigit():
            raise EdgecError(f"--linear-attention {text!r}: bad size {extra!r} (m=N or l=N)")
        param = int(val)
    return Mode("force", parts[1], param, budget, seed)


@register_pass("linear-attention", phase="optimize", default=False, origin="built-in")
def linear_attention(mod: tvm.IRModule, ctx: Any = None) -> tvm.IRModule:
    """Lower softmax attention to O(N) linear attention (FAVOR+, Nystrom, elu+1)."""
    from edgec.passes import attention_auto

    options = dict(getattr(ctx, "options", None) or {})
    mode = parse_mode(options)
    target = getattr(ctx, "target", None)
    calib = getattr(ctx, "calib", None)
    new, report = attention_auto.run(mod, mode, target=target, calib=calib)
    if ctx is not None:
        ctx.report["linear-attention"] = report
    return new
