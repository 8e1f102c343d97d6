"""Shared pieces of the recurrent converters (LSTM, GRU): attributes, activations, layout.

ONNX's recurrent ops share one signature shape: ``X, W, R, B, sequence_lens, initial_h``
(+ ``initial_c``, ``P`` for LSTM), the attributes ``direction``, ``hidden_size``,
``layout``, ``activations``/``activation_alpha``/``activation_beta`` and ``clip``, and
outputs ``Y`` (all hidden states) and ``Y_h`` (last hidden state). Everything here is
about that common frame; the cell equations live in ``lstm.py`` and ``gru.py``.

The recurrence is unrolled over the sequence length, which must therefore be static
(edgec fixes input shapes before import). Weights that are constants are sliced and
transposed with NumPy at import time so the compiled graph holds ready-to-use matrices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tvm
from edgec.errors import UnsupportedOpsError
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

Activation = Callable[[relax.Expr], relax.Expr]


class RnnError(UnsupportedOpsError):
    """A recurrent node uses an attribute value or input edgec cannot convert."""


def fail(op: str, attr: dict[str, Any], reason: str) -> RnnError:
    """The error for one node, naming it so the user can find it in the model."""
    name = attr.get("tvm_custom", {}).get("name", "?")
    return RnnError(f"{op} node '{name}': {reason}")


def _text(value: Any) -> str:
    # ONNX string attributes arrive from TVM's attribute parser as bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


def optional_input(inputs: Any, k: int) -> relax.Expr | None:
    """Input ``k`` of a node, or None when the node has fewer inputs."""
    return inputs[k] if len(inputs) > k else None


def is_const(expr: relax.Expr | None) -> bool:
    return isinstance(expr, tvm.ir.GenericConst)


def const_value(expr: relax.Expr) -> np.ndarray:
    return expr.value.numpy()


def dtype_of(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)


def static_shape(expr: relax.Expr) -> list[int | None]:
    """The tensor's dims, ``None`` where a dim is symbolic."""
    shape = expr.ty.shape
    if not isinstance(shape, relax.ShapeExpr):
        return [None] * max(expr.ty.ndim, 0)
    return [int(d.value) if isinstance(d, tvm.tirx.IntImm) else None for d in shape.values]


def shape_dims(expr: relax.Expr) -> list[Any]:
    """The tensor's dims as PrimExprs (symbolic ones kept) for building new shapes."""
    return list(expr.ty.shape.values)


# ---------------------------------------------------------------------------------------
# Activations. ONNX names them in ``activations`` and takes their parameters from
# ``activation_alpha``/``activation_beta`` in order, consumed only by the functions that
# have that parameter (ONNX Runtime's reading, which we match).
# name -> (number of alphas, number of betas, default alpha, default beta)
_ACTIVATION_PARAMS: dict[str, tuple[int, int, float, float]] = {
    "sigmoid": (0, 0, 0.0, 0.0),
    "tanh": (0, 0, 0.0, 0.0),
    "relu": (0, 0, 0.0, 0.0),
    "softsign": (0, 0, 0.0, 0.0),
    "softplus": (0, 0, 0.0, 0.0),
    "leakyrelu": (1, 0, 0.01, 0.0),
    "thresholdedrelu": (1, 0, 1.0, 0.0),
    "elu": (1, 0, 1.0, 0.0),
    "hardsigmoid": (1, 1, 0.2, 0.5),
    "affine": (1, 1, 1.0, 0.0),
    "scaledtanh": (1, 1, 1.0, 1.0),
}


def _make_activation(name: str, alpha: float, beta: float, dtype: str) -> Activation:
    def c(v: float) -> relax.Expr:
        return relax.const(v, dtype)

    op = relax.op
    table: dict[str, Activation] = {
        "sigmoid": op.sigmoid,
        "tanh": op.tanh,
        "relu": op.nn.relu,
        "softsign": lambda x: op.divide(x, op.add(c(1.0), op.abs(x))),
        "softplus": lambda x: op.log(op.add(c(1.0), op.exp(x))),
        "leakyrelu": lambda x: op.nn.leakyrelu(x, alpha),
        "thresholdedrelu": lambda x: op.where(op.greater(x, c(alpha)), x, c(0.0)),
        "elu": lambda x: op.where(
            op.greater(x, c(0.0)), x, op.multiply(c(alpha), op.subtract(op.exp(x), c(1.0)))
        ),
        "hardsigmoid": lambda x: op.clip(op.add(op.multiply(c(alpha), x), c(beta)), 0.0, 1.0),
        "affine": lambda x: op.add(op.multiply(c(alpha), x), c(beta)),
        "scaledtanh": lambda x: op.multiply(c(alpha), op.tanh(op.multiply(c(beta), x))),
    }
    return table[name]


def activations(
    op: str, attr: dict[str, Any], defaults: Sequence[str], num_directions: int, dtype: str
) -> list[list[Activation]]:
    """Per direction, the cell's activation functions (``len(defaults)`` of them)."""
    names = [_text(n) for n in attr.get("activations", ())]
    if not names:
        names = list(defaults) * num_directions
    if len(names) == len(defaults) and num_directions == 2:
        # Tolerated by ONNX Runtime: one set given for both directions.
        names = names * 2
    if len(names) != len(defaults) * num_directions:
        raise fail(op, attr, f"expected {len(defaults) * num_directions} activations, got {names}")
    alphas = list(attr.get("activation_alpha", ()))
    betas = list(attr.get("activation_beta", ()))
    funcs: list[Activation] = []
    for name in names:
        key = name.lower()
        if key not in _ACTIVATION_PARAMS:
            raise fail(op, attr, f"activation '{name}' is not supported")
        n_alpha, n_beta, alpha, beta = _ACTIVATION_PARAMS[key]
        if n_alpha and alphas:
            alpha = float(alphas.pop(0))
        if n_beta and betas:
            beta = float(betas.pop(0))
        funcs.append(_make_activation(key, alpha, beta, dtype))
    k = len(defaults)
    return [funcs[d * k : (d + 1) * k] for d in range(num_directions)]


class RecurrentConverter(OnnxOpConverter):
    """Base of the LSTM, GRU and RNN converters: one ``_convert`` for every opset."""

    @classmethod
    def _convert(cls, bb: relax.BlockBuilder, inputs: Any, attr: dict, opset: int) -> relax.Expr:
        raise NotImplementedError

    @classmethod
    def _impl_v1(cls, bb: relax.BlockBuilder, inputs: Any, attr: dict, params: Any) -> relax.Expr:
        return cls._convert(bb, inputs, attr, opset=1)

    @classmethod
    def _impl_v14(cls, bb: relax.BlockBuilder, inputs: Any, attr: dict, params: Any) -> relax.Expr:
        # Opset 14 added ``layout`` (batch-major X/Y/states when 1).
        return cls._convert(bb, inputs, attr, opset=14)


# ---------------------------------------------------------------------------------------
class RnnFrame:
    """The parts common to LSTM and GRU: inputs in time-major form, per-direction
    weights, the sequence mask, and assembling Y / Y_h in the requested layout."""

    def __init__(
        self,
        op: str,
        bb: relax.BlockBuilder,
        inputs: Sequence[Any],
        attr: dict[str, Any],
        num_gates: int,
        opset: int,
    ) -> None:
        self.op, self.bb, self.attr = op, bb, attr
        x = inputs[0]
        self.dtype = dtype_of(x)
        direction = _text(attr.get("direction", b"forward"))
        if direction not in ("forward", "reverse", "bidirectional"):
            raise self.fail(f"direction '{direction}' is not an ONNX direction")
        self.directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        self.layout = int(attr.get("layout", 0)) if opset >= 14 else 0
        if self.layout not in (0, 1):
            raise self.fail(f"layout {self.layout} is not supported")
        if x.ty.ndim != 3:
            raise self.fail("X must be a rank-3 tensor")
        if self.layout == 1:
            # [batch, seq, input] -> [seq, batch, input]: the converters work time-major.
            x = self.emit(relax.op.permute_dims(x, [1, 0, 2]))
        seq = static_shape(x)[0]
        if seq is None:
            raise self.fail(
                "the sequence length is not static; fix the input shapes before import "
                "(the recurrence is unrolled)"
            )
        self.x, self.seq_len = x, seq
        self.batch = shape_dims(x)[1]
        w = inputs[1]
        w_shape = static_shape(w)
        hidden = attr.get("hidden_size")
        if hidden is None:
            if w_shape[1] is None:
                raise self.fail("hidden_size is missing and W's shape is not static")
            hidden = w_shape[1] // num_gates
        self.hidden = int(hidden)
        self.num_gates = num_gates
        self.clip = attr.get("clip")
        self.seq_mask = self._sequence_mask(inputs[4] if len(inputs) > 4 else None)

    def fail(self, reason: str) -> RnnError:
        return fail(self.op, self.attr, reason)

    def emit(self, expr: relax.Expr) -> relax.Expr:
        # Bind every step: the unrolled graph reuses h/c many times and must not duplicate.
        return self.bb.emit(expr)

    def const(self, value: float) -> relax.Expr:
        return relax.const(value, self.dtype)

    # -- weights ---------------------------------------------------------------------
    def direction_slice(self, expr: relax.Expr | None, d: int) -> relax.Expr | None:
        """``expr[d]`` for a tensor whose first axis is num_directions."""
        if expr is None:
            return None
        if is_const(expr):
            return relax.const(const_value(expr)[d])
        sliced = relax.op.strided_slice(expr, axes=[0], begin=[d], end=[d + 1])
        return self.emit(relax.op.squeeze(sliced, axis=[0]))

    def transposed(self, expr: relax.Expr) -> relax.Expr:
        """``expr^T`` of a 2-D weight, folded at import for constants."""
        if is_const(expr):
            return relax.const(np.ascontiguousarray(const_value(expr).T))
        return self.emit(relax.op.permute_dims(expr, [1, 0]))

    def split_last(self, expr: relax.Expr, parts: int) -> list[relax.Expr]:
        """Split the last axis into equal parts (gate blocks)."""
        if is_const(expr):
            return [relax.const(p) for p in np.split(const_value(expr), parts, axis=-1)]
        tup = self.emit(relax.op.split(expr, parts, axis=-1))
        return [self.emit(relax.TupleGetItem(tup, i)) for i in range(parts)]

    def add_bias(self, a: relax.Expr | None, b: relax.Expr | None) -> relax.Expr | None:
        if a is None:
            return b
        if b is None:
            return a
        if is_const(a) and is_const(b):
            return relax.const(const_value(a) + const_value(b))
        return self.emit(relax.op.add(a, b))

    # -- states ----------------------------------------------------------------------
    def initial_state(self, expr: relax.Expr | None) -> list[relax.Expr]:
        """Per direction, a [batch, hidden] initial state (zeros when absent)."""
        if expr is None:
            zeros = self.emit(
                relax.op.zeros(relax.ShapeExpr([self.batch, self.hidden]), self.dtype)
            )
            return [zeros for _ in self.directions]
        if self.layout == 1:
            expr = self.emit(relax.op.permute_dims(expr, [1, 0, 2]))
        return [self.direction_slice(expr, d) for d in range(len(self.directions))]

    def time_steps(self, expr: relax.Expr) -> list[relax.Expr]:
        """Split a [seq, ...] tensor into ``seq`` tensors without the time axis."""
        if self.seq_len == 1:
            return [self.emit(relax.op.squeeze(expr, axis=[0]))]
        tup = self.emit(relax.op.split(expr, self.seq_len, axis=0))
        return [
            self.emit(relax.op.squeeze(relax.TupleGetItem(tup, t), axis=[0]))
            for t in range(self.seq_len)
        ]

    def clipped(self, expr: relax.Expr) -> relax.Expr:
        """ONNX ``clip`` bounds the inputs of the activations."""
        if self.clip is None:
            return expr
        return self.emit(relax.op.clip(expr, -float(self.clip), float(self.clip)))

    def order(self, d: int) -> list[int]:
        steps = list(range(self.seq_len))
        return steps[::-1] if self.directions[d] == "reverse" else steps

    # -- sequence_lens ---------------------------------------------------------------
    def _sequence_mask(self, lens: relax.Expr | None) -> list[relax.Expr] | None:
        """Per time step a [batch, 1] 0/1 mask ``t < sequence_lens``, or None when every
        sequence is full length. Masked steps keep the state and output zeros, which is
        what ONNX Runtime does; run backwards, it makes the reverse direction start at
        each sequence's own last step."""
        if lens is None:
            return None
        if is_const(lens):
            value = const_value(lens).astype(np.int64).reshape(-1)
            if np.all(value == self.seq_len):
                return None
            if np.any(value < 1) or np.any(value > self.seq_len):
                raise self.fail(f"sequence_lens {value.tolist()} out of range 1..{self.seq_len}")
        lens_f = self.emit(relax.op.expand_dims(relax.op.astype(lens, self.dtype), axis=[1]))
        return [
            self.emit(relax.op.astype(relax.op.less(self.const(float(t)), lens_f), self.dtype))
            for t in range(self.seq_len)
        ]

    def masked(self, t: int, new: relax.Expr, old: relax.Expr) -> relax.Expr:
        """``new`` where step t is inside the sequence, else ``old``."""
        if self.seq_mask is None:
            return new
        m = self.seq_mask[t]
        return self.emit(relax.op.add(old, relax.op.multiply(m, relax.op.subtract(new, old))))

    def masked_output(self, t: int, h: relax.Expr) -> relax.Expr:
        if self.seq_mask is None:
            return h
        return self.emit(relax.op.multiply(self.seq_mask[t], h))

    # -- outputs ---------------------------------------------------------------------
    def outputs(self, ys: list[list[relax.Expr]], finals: list[list[relax.Expr]]) -> relax.Tuple:
        """``ys[d][t]``: [batch, hidden] outputs in time order; ``finals[k][d]``: the
        last states (Y_h, then Y_c for LSTM). Returns (Y, Y_h[, Y_c]) in ONNX layout."""
        per_dir = [self.emit(relax.op.stack(y, axis=0)) for y in ys]  # [seq, batch, hidden]
        y = self.emit(relax.op.stack(per_dir, axis=1))  # [seq, dirs, batch, hidden]
        states = [self.emit(relax.op.stack(f, axis=0)) for f in finals]  # [dirs, batch, hidden]
        if self.layout == 1:
            y = self.emit(relax.op.permute_dims(y, [2, 0, 1, 3]))
            states = [self.emit(relax.op.permute_dims(s, [1, 0, 2])) for s in states]
        return relax.Tuple([y, *states])
