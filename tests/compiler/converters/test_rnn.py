"""edgec's RNN converter against ONNX Runtime on one-node models."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.converters._rnn_oracle import compare, one_node_model

INPUT, HIDDEN = 5, 4


def rnn_case(*, direction: str = "forward", seq: int = 3, batch: int = 2, bias: bool = True,
             init: bool = True, seq_lens: list[int] | None = None, layout: int = 0,
             attrs: dict | None = None, weights_as_inputs: bool = False, seed: int = 3):
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1

    def rand(*shape: int) -> np.ndarray:
        return rng.uniform(-1, 1, shape).astype(np.float32)

    arrays = {"X": rand(*((batch, seq, INPUT) if layout else (seq, batch, INPUT))),
              "W": rand(dirs, HIDDEN, INPUT), "R": rand(dirs, HIDDEN, HIDDEN)}
    if bias:
        arrays["B"] = rand(dirs, 2 * HIDDEN)
    if seq_lens is not None:
        arrays["sequence_lens"] = np.array(seq_lens, np.int32)
    if init:
        arrays["initial_h"] = rand(*((batch, dirs, HIDDEN) if layout else (dirs, batch, HIDDEN)))
    node_attrs = {"hidden_size": HIDDEN, "direction": direction, **(attrs or {})}
    if layout:
        node_attrs["layout"] = layout
    inits = set() if weights_as_inputs else {"W", "R", "B"}
    model = one_node_model("RNN", arrays, node_attrs, ["Y", "Y_h"],
                           as_initializers=inits & set(arrays), opset=14)
    return model, {i.name: arrays[i.name] for i in model.graph.input}


@pytest.mark.parametrize("kwargs", [
    {}, {"direction": "reverse", "bias": False}, {"direction": "bidirectional", "init": False},
    {"weights_as_inputs": True}, {"layout": 1, "direction": "bidirectional"},
    {"seq_lens": [3, 1], "direction": "bidirectional"},
    {"attrs": {"clip": 0.4, "activations": ["Relu"]}},
])
def test_rnn_matches_onnxruntime(kwargs: dict) -> None:
    compare(*rnn_case(**kwargs))
