"""ONNX LSTM -> plain Relax ops, unrolled over the (static) sequence length.

TVM 0.27's ONNX importer has no LSTM converter. Per direction, with ``f, g, h`` the
activations (default Sigmoid, Tanh, Tanh), ``*`` the elementwise product and ``W, R, B, P``
split into gate blocks in ONNX order **i, o, f, c** (``P`` in order i, o, f)::

    i_t = f(X_t W_i^T + H_{t-1} R_i^T + P_i * C_{t-1} + Wb_i + Rb_i)
    f_t = f(X_t W_f^T + H_{t-1} R_f^T + P_f * C_{t-1} + Wb_f + Rb_f)   (1 - i_t if input_forget)
    c_t = g(X_t W_c^T + H_{t-1} R_c^T + Wb_c + Rb_c)
    C_t = f_t * C_{t-1} + i_t * c_t
    o_t = f(X_t W_o^T + H_{t-1} R_o^T + P_o * C_t + Wb_o + Rb_o)
    H_t = o_t * h(C_t)

``clip`` bounds the gate pre-activations to [-clip, clip]. ``X W^T + Wb + Rb`` is computed
for all time steps in one matmul; only ``H_{t-1} R^T`` stays inside the loop. Inputs:
X, W, R, B, sequence_lens, initial_h, initial_c, P; outputs Y, Y_h, Y_c (any may be unused).
"""

from __future__ import annotations

from typing import Any

from edgec.converters._rnn import RecurrentConverter, RnnFrame, activations, optional_input
from tvm import relax

# Position of each gate block in W/R/B (ONNX order i, o, f, c).
_I, _O, _F, _C = 0, 1, 2, 3


class LSTM(RecurrentConverter):
    """ONNX LSTM (opsets 1-22; ``layout`` read from opset 14)."""

    @classmethod
    def _convert(cls, bb: relax.BlockBuilder, inputs: Any, attr: dict, opset: int) -> relax.Expr:
        fr = RnnFrame("LSTM", bb, inputs, attr, num_gates=4, opset=opset)
        w, r, b = inputs[1], inputs[2], optional_input(inputs, 3)
        h0s = fr.initial_state(optional_input(inputs, 5))
        c0s = fr.initial_state(optional_input(inputs, 6))
        p = optional_input(inputs, 7)
        input_forget = bool(attr.get("input_forget", 0))
        acts = activations("LSTM", attr, ("Sigmoid", "Tanh", "Tanh"), len(fr.directions), fr.dtype)

        ys: list[list[relax.Expr]] = []
        h_last: list[relax.Expr] = []
        c_last: list[relax.Expr] = []
        for d in range(len(fr.directions)):
            f_act, g_act, h_act = acts[d]
            w_t = fr.transposed(fr.direction_slice(w, d))  # [input, 4H]
            r_t = fr.transposed(fr.direction_slice(r, d))  # [H, 4H]
            bias = None
            if b is not None:
                wb, rb = fr.split_last(fr.direction_slice(b, d), 2)
                bias = fr.add_bias(wb, rb)  # [4H]
            peep = fr.split_last(fr.direction_slice(p, d), 3) if p is not None else None

            # Input projection for every step at once: [seq, batch, 4H].
            xw = fr.emit(relax.op.matmul(fr.x, w_t))
            if bias is not None:
                xw = fr.emit(relax.op.add(xw, bias))
            xw_steps = fr.time_steps(xw)

            h, c = h0s[d], c0s[d]
            y_dir: list[relax.Expr | None] = [None] * fr.seq_len
            for t in fr.order(d):
                gates = fr.emit(relax.op.add(xw_steps[t], relax.op.matmul(h, r_t)))
                split = fr.emit(relax.op.split(gates, 4, axis=-1))
                gi, go, gf, gc = (fr.emit(relax.TupleGetItem(split, k)) for k in (_I, _O, _F, _C))
                if peep is not None:
                    gi = fr.emit(relax.op.add(gi, relax.op.multiply(peep[0], c)))
                    gf = fr.emit(relax.op.add(gf, relax.op.multiply(peep[2], c)))
                i_t = fr.emit(f_act(fr.clipped(gi)))
                if input_forget:
                    # Coupled input/forget gate: what is written replaces what is kept.
                    f_t = fr.emit(relax.op.subtract(fr.const(1.0), i_t))
                else:
                    f_t = fr.emit(f_act(fr.clipped(gf)))
                c_t = fr.emit(g_act(fr.clipped(gc)))
                c_new = fr.emit(
                    relax.op.add(relax.op.multiply(f_t, c), relax.op.multiply(i_t, c_t))
                )
                if peep is not None:
                    go = fr.emit(relax.op.add(go, relax.op.multiply(peep[1], c_new)))
                o_t = fr.emit(f_act(fr.clipped(go)))
                h_new = fr.emit(relax.op.multiply(o_t, h_act(c_new)))
                y_dir[t] = fr.masked_output(t, h_new)
                h = fr.masked(t, h_new, h)
                c = fr.masked(t, c_new, c)
            ys.append(y_dir)  # type: ignore[arg-type]
            h_last.append(h)
            c_last.append(c)
        return fr.outputs(ys, [h_last, c_last])
