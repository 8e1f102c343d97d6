"""ONNX GRU -> plain Relax ops, unrolled over the (static) sequence length.

TVM 0.27's ONNX importer has no GRU converter. Per direction, with ``f, g`` the
activations (default Sigmoid, Tanh), ``*`` the elementwise product and ``W, R, B`` split
into gate blocks in ONNX order **z, r, h**::

    z_t = f(X_t W_z^T + H_{t-1} R_z^T + Wb_z + Rb_z)
    r_t = f(X_t W_r^T + H_{t-1} R_r^T + Wb_r + Rb_r)
    h_t = g(X_t W_h^T + (r_t * H_{t-1}) R_h^T + Rb_h + Wb_h)        linear_before_reset = 0
    h_t = g(X_t W_h^T + r_t * (H_{t-1} R_h^T + Rb_h) + Wb_h)        linear_before_reset != 0
    H_t = (1 - z_t) * h_t + z_t * H_{t-1}

``clip`` bounds the activations' inputs to [-clip, clip]. ``X W^T + Wb`` (plus ``Rb`` for
z and r) is computed for all steps in one matmul. Inputs: X, W, R, B, sequence_lens,
initial_h; outputs Y, Y_h (either may be unused).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from edgec.converters._rnn import (
    RecurrentConverter,
    RnnFrame,
    activations,
    const_value,
    is_const,
    optional_input,
)
from tvm import relax


class GRU(RecurrentConverter):
    """ONNX GRU (opsets 1-22; ``layout`` read from opset 14)."""

    @classmethod
    def _convert(cls, bb: relax.BlockBuilder, inputs: Any, attr: dict, opset: int) -> relax.Expr:
        fr = RnnFrame("GRU", bb, inputs, attr, num_gates=3, opset=opset)
        w, r, b = inputs[1], inputs[2], optional_input(inputs, 3)
        h0s = fr.initial_state(optional_input(inputs, 5))
        linear_before_reset = bool(attr.get("linear_before_reset", 0))
        acts = activations("GRU", attr, ("Sigmoid", "Tanh"), len(fr.directions), fr.dtype)
        H = fr.hidden

        ys: list[list[relax.Expr]] = []
        h_last: list[relax.Expr] = []
        for d in range(len(fr.directions)):
            f_act, g_act = acts[d]
            w_t = fr.transposed(fr.direction_slice(w, d))  # [input, 3H]
            r_zr, r_h = cls._split_r(fr, fr.direction_slice(r, d), H)  # [H, 2H], [H, H]
            x_bias = rb_h = None
            if b is not None:
                wb, rb = fr.split_last(fr.direction_slice(b, d), 2)
                rb_zr, rb_h = cls._split_zr_h(fr, rb, H)
                # z and r take both biases up front; h's recurrent bias must stay with the
                # recurrent term because r_t multiplies it when linear_before_reset is set.
                if is_const(rb_zr):
                    rb_x = relax.const(np.concatenate([const_value(rb_zr), np.zeros(H, fr.dtype)]))
                else:
                    rb_x = fr.emit(
                        relax.op.concat([rb_zr, relax.op.zeros(relax.ShapeExpr([H]), fr.dtype)])
                    )
                x_bias = fr.add_bias(wb, rb_x)  # [3H]

            xw = fr.emit(relax.op.matmul(fr.x, w_t))  # [seq, batch, 3H]
            if x_bias is not None:
                xw = fr.emit(relax.op.add(xw, x_bias))
            xw_steps = fr.time_steps(xw)

            h = h0s[d]
            y_dir: list[relax.Expr | None] = [None] * fr.seq_len
            for t in fr.order(d):
                xs = fr.emit(relax.op.split(xw_steps[t], [2 * H], axis=-1))
                x_zr, x_h = fr.emit(relax.TupleGetItem(xs, 0)), fr.emit(relax.TupleGetItem(xs, 1))
                zr = fr.emit(relax.op.add(x_zr, relax.op.matmul(h, r_zr)))
                zr = fr.emit(f_act(fr.clipped(zr)))
                zr_split = fr.emit(relax.op.split(zr, 2, axis=-1))
                z_t = fr.emit(relax.TupleGetItem(zr_split, 0))
                r_t = fr.emit(relax.TupleGetItem(zr_split, 1))
                if linear_before_reset:
                    rec = fr.emit(relax.op.matmul(h, r_h))
                    if rb_h is not None:
                        rec = fr.emit(relax.op.add(rec, rb_h))
                    rec = fr.emit(relax.op.multiply(r_t, rec))
                else:
                    rec = fr.emit(relax.op.matmul(relax.op.multiply(r_t, h), r_h))
                    if rb_h is not None:
                        rec = fr.emit(relax.op.add(rec, rb_h))
                h_t = fr.emit(g_act(fr.clipped(relax.op.add(x_h, rec))))
                # (1 - z) * h_t + z * H  ==  h_t + z * (H - h_t)
                h_new = fr.emit(
                    relax.op.add(h_t, relax.op.multiply(z_t, relax.op.subtract(h, h_t)))
                )
                y_dir[t] = fr.masked_output(t, h_new)
                h = fr.masked(t, h_new, h)
            ys.append(y_dir)  # type: ignore[arg-type]
            h_last.append(h)
        return fr.outputs(ys, [h_last])

    @staticmethod
    def _split_zr_h(fr: RnnFrame, v: relax.Expr, H: int) -> tuple[relax.Expr, relax.Expr]:
        """Split the last axis of a [.., 3H] tensor into the z|r block and the h block."""
        if is_const(v):
            a = const_value(v)
            return relax.const(a[..., : 2 * H]), relax.const(a[..., 2 * H :])
        tup = fr.emit(relax.op.split(v, [2 * H], axis=-1))
        return fr.emit(relax.TupleGetItem(tup, 0)), fr.emit(relax.TupleGetItem(tup, 1))

    @classmethod
    def _split_r(cls, fr: RnnFrame, r: relax.Expr, H: int) -> tuple[relax.Expr, relax.Expr]:
        """R [3H, H] -> (R_zr^T [H, 2H], R_h^T [H, H])."""
        r_t = fr.transposed(r)  # [H, 3H]
        return cls._split_zr_h(fr, r_t, H)
