"""edgec's LSTM converter against ONNX Runtime on one-node models."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.converters import installed, supported_ops
from edgec.errors import UnsupportedOpsError
from tvm.relax.frontend.onnx import from_onnx

from tests.compiler.converters._rnn_oracle import compare, one_node_model

INPUT, HIDDEN = 5, 4


def lstm_case(
    *,
    direction: str = "forward",
    seq: int = 3,
    batch: int = 1,
    bias: bool = True,
    init: bool = True,
    peephole: bool = False,
    seq_lens: list[int] | None = None,
    layout: int = 0,
    outputs: tuple[str, ...] = ("Y", "Y_h", "Y_c"),
    weights_as_inputs: bool = False,
    attrs: dict | None = None,
    seed: int = 0,
):
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1

    def rand(*shape: int) -> np.ndarray:
        return rng.uniform(-1, 1, shape).astype(np.float32)

    x_shape = (batch, seq, INPUT) if layout else (seq, batch, INPUT)
    state_shape = (batch, dirs, HIDDEN) if layout else (dirs, batch, HIDDEN)
    arrays = {
        "X": rand(*x_shape),
        "W": rand(dirs, 4 * HIDDEN, INPUT),
        "R": rand(dirs, 4 * HIDDEN, HIDDEN),
    }
    if bias:
        arrays["B"] = rand(dirs, 8 * HIDDEN)
    if seq_lens is not None:
        arrays["sequence_lens"] = np.array(seq_lens, np.int32)
    if init:
        arrays["initial_h"] = rand(*state_shape)
        arrays["initial_c"] = rand(*state_shape)
    if peephole:
        arrays["P"] = rand(dirs, 3 * HIDDEN)
    node_attrs = {"hidden_size": HIDDEN, "direction": direction, **(attrs or {})}
    if layout:
        node_attrs["layout"] = layout
    inits = set() if weights_as_inputs else {"W", "R", "B", "P"}
    model = one_node_model(
        "LSTM", arrays, node_attrs, list(outputs), as_initializers=inits & set(arrays), opset=14
    )
    feeds = {i.name: arrays[i.name] for i in model.graph.input}
    return model, feeds


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("seq", [1, 4])
@pytest.mark.parametrize("batch", [1, 3])
def test_directions_shapes(direction: str, seq: int, batch: int) -> None:
    compare(*lstm_case(direction=direction, seq=seq, batch=batch))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bias": False},
        {"init": False},
        {"bias": False, "init": False, "direction": "bidirectional"},
        {"peephole": True, "direction": "bidirectional", "batch": 2},
        {"weights_as_inputs": True, "peephole": True, "direction": "bidirectional"},
        {"layout": 1, "direction": "bidirectional", "batch": 2},
        {"layout": 1, "init": False, "batch": 3},
    ],
    ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()),
)
def test_optional_inputs_and_layout(kwargs: dict) -> None:
    compare(*lstm_case(**kwargs))


@pytest.mark.parametrize(
    "outputs", [("Y",), ("", "Y_h"), ("", "", "Y_c"), ("Y", "", "Y_c"), ("", "Y_h", "Y_c")]
)
def test_unused_outputs(outputs: tuple[str, ...]) -> None:
    compare(*lstm_case(outputs=outputs, direction="bidirectional", batch=2))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_sequence_lens(direction: str) -> None:
    # Constant lengths 5, 2, 3 in a sequence of 5: shorter sequences are masked.
    compare(*lstm_case(direction=direction, seq=5, batch=3, seq_lens=[5, 2, 3]))


def test_sequence_lens_full_length_is_free() -> None:
    compare(*lstm_case(seq=3, batch=2, seq_lens=[3, 3]))


@pytest.mark.parametrize(
    "attrs",
    [
        {"clip": 0.5},
        {"input_forget": 1},
        {
            "activations": ["HardSigmoid", "Tanh", "Relu"],
            "activation_alpha": [0.3],
            "activation_beta": [0.4],
        },
        {"activations": ["Sigmoid", "Softsign", "LeakyRelu"], "activation_alpha": [0.2]},
        {
            "activations": ["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Elu", "Softplus"],
            "activation_alpha": [0.7],
        },
    ],
    ids=["clip", "input_forget", "hardsigmoid", "softsign-leaky", "bidir-elu-softplus"],
)
def test_attributes(attrs: dict) -> None:
    direction = "bidirectional" if len(attrs.get("activations", ())) == 6 else "forward"
    compare(*lstm_case(attrs=attrs, direction=direction, batch=2, peephole=True))


def test_unsupported_activation_is_reported() -> None:
    model, _ = lstm_case(attrs={"activations": ["Sigmoid", "Gelu", "Tanh"]})
    with installed(), pytest.raises(UnsupportedOpsError, match="LSTM.*Gelu"):
        from_onnx(model)


def test_installed_nests_and_restores() -> None:
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map
    assert "LSTM" not in original()
    with installed():
        with installed():
            assert "LSTM" in onnx_frontend._get_convert_map()
        assert "LSTM" in onnx_frontend._get_convert_map()
    assert onnx_frontend._get_convert_map is original
    assert {"LSTM", "GRU", "Conv", "Constant", "If"} <= supported_ops()


def test_opset7_model() -> None:
    model, feeds = lstm_case(direction="bidirectional", batch=2)
    model.opset_import[0].version = 7
    compare(model, feeds)


def test_dynamic_sequence_length_is_reported() -> None:
    model, _ = lstm_case()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "seq"
    with installed(), pytest.raises(UnsupportedOpsError, match="sequence length is not static"):
        from_onnx(model)
