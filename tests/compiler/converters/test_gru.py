"""edgec's GRU converter against ONNX Runtime on one-node models."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.converters._rnn_oracle import compare, one_node_model

INPUT, HIDDEN = 5, 4


def gru_case(
    *,
    direction: str = "forward",
    seq: int = 3,
    batch: int = 1,
    bias: bool = True,
    init: bool = True,
    linear_before_reset: int = 0,
    seq_lens: list[int] | None = None,
    layout: int = 0,
    outputs: tuple[str, ...] = ("Y", "Y_h"),
    weights_as_inputs: bool = False,
    attrs: dict | None = None,
    seed: int = 1,
):
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1

    def rand(*shape: int) -> np.ndarray:
        return rng.uniform(-1, 1, shape).astype(np.float32)

    x_shape = (batch, seq, INPUT) if layout else (seq, batch, INPUT)
    arrays = {
        "X": rand(*x_shape),
        "W": rand(dirs, 3 * HIDDEN, INPUT),
        "R": rand(dirs, 3 * HIDDEN, HIDDEN),
    }
    if bias:
        arrays["B"] = rand(dirs, 6 * HIDDEN)
    if seq_lens is not None:
        arrays["sequence_lens"] = np.array(seq_lens, np.int32)
    if init:
        arrays["initial_h"] = rand(*((batch, dirs, HIDDEN) if layout else (dirs, batch, HIDDEN)))
    node_attrs = {"hidden_size": HIDDEN, "direction": direction, **(attrs or {})}
    if linear_before_reset:
        node_attrs["linear_before_reset"] = linear_before_reset
    if layout:
        node_attrs["layout"] = layout
    inits = set() if weights_as_inputs else {"W", "R", "B"}
    model = one_node_model(
        "GRU", arrays, node_attrs, list(outputs), as_initializers=inits & set(arrays), opset=14
    )
    return model, {i.name: arrays[i.name] for i in model.graph.input}


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("seq,batch", [(1, 1), (4, 3)])
def test_directions_shapes(linear_before_reset: int, direction: str, seq: int, batch: int) -> None:
    compare(
        *gru_case(
            direction=direction, seq=seq, batch=batch, linear_before_reset=linear_before_reset
        )
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bias": False},
        {"init": False, "direction": "bidirectional"},
        {"weights_as_inputs": True, "linear_before_reset": 1, "direction": "bidirectional"},
        {"weights_as_inputs": True, "linear_before_reset": 0, "batch": 2},
        {"layout": 1, "direction": "bidirectional", "batch": 2, "linear_before_reset": 1},
        {"outputs": ("", "Y_h"), "batch": 2},
        {"outputs": ("Y",), "direction": "reverse"},
        {"seq_lens": [4, 1, 3], "seq": 4, "batch": 3, "direction": "bidirectional"},
        {"attrs": {"clip": 0.3}, "batch": 2},
        {"attrs": {"activations": ["HardSigmoid", "Softsign"], "activation_alpha": [0.25]}},
    ],
    ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()),
)
def test_variants(kwargs: dict) -> None:
    compare(*gru_case(**kwargs))
