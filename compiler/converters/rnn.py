"""ONNX RNN (the simple recurrent cell) -> plain Relax ops, unrolled over the static
sequence length, on the frame LSTM and GRU share (``_rnn.RnnFrame``).

Per direction, with ``f`` the activation (default Tanh)::

    H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)

``clip`` bounds the activation's input to [-clip, clip]. ``X W^T + Wb + Rb`` is computed
for all steps in one matmul. Inputs: X, W, R, B, sequence_lens, initial_h; outputs Y, Y_h.
"""

from __future__ import annotations

from typing import Any

from edgec.converters._rnn import RecurrentConverter, RnnFrame, activations, optional_input
from tvm import relax


class RNN(RecurrentConverter):
    """ONNX RNN (opsets 1-22; ``layout`` read from opset 14)."""

    @classmethod
    def _convert(cls, bb: relax.BlockBuilder, inputs: Any, attr: dict, opset: int) -> relax.Expr:
        fr = RnnFrame("RNN", bb, inputs, attr, num_gates=1, opset=opset)
        w, r, b = inputs[1], inputs[2], optional_input(inputs, 3)
        h0s = fr.initial_state(optional_input(inputs, 5))
        acts = activations("RNN", attr, ("Tanh",), len(fr.directions), fr.dtype)
        ys: list[list[relax.Expr]] = []
        h_last: list[relax.Expr] = []
        for d in range(len(fr.directions)):
            (f_act,) = acts[d]
            w_t = fr.transposed(fr.direction_slice(w, d))  # [input, H]
            r_t = fr.transposed(fr.direction_slice(r, d))  # [H, H]
            xw = fr.emit(relax.op.matmul(fr.x, w_t))  # [seq, batch, H]
            if b is not None:
                wb, rb = fr.split_last(fr.direction_slice(b, d), 2)
                xw = fr.emit(relax.op.add(xw, fr.add_bias(wb, rb)))
            steps = fr.time_steps(xw)
            h = h0s[d]
            y_dir: list[relax.Expr | None] = [None] * fr.seq_len
            for t in fr.order(d):
                pre = fr.emit(relax.op.add(steps[t], relax.op.matmul(h, r_t)))
                h_new = fr.emit(f_act(fr.clipped(pre)))
                y_dir[t] = fr.masked_output(t, h_new)
                h = fr.masked(t, h_new, h)
            ys.append(y_dir)  # type: ignore[arg-type]
            h_last.append(h)
        return fr.outputs(ys, [h_last])
