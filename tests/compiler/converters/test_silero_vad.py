"""Silero VAD (LSTM + Conv1d + reflect Pad) through TVM with edgec's converters, against
ONNX Runtime on speech made by espeak-ng, mixed with silence and noise."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import tvm
from edgec.converters import installed
from onnxscript.optimizer import optimize_ir
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

pytestmark = pytest.mark.slow

RATE = 16000
CHUNK, CONTEXT = 512, 64  # the 16 kHz model reads 512 new samples + 64 of context per row
ROWS = 48  # sequence_length fixed at import: 48 chunks = 1.5 s, unrolled in the LSTM


def silero_path() -> Path:
    # Located, not imported: importing silero_vad pulls torchaudio.
    spec = importlib.util.find_spec("silero_vad")
    assert spec is not None and spec.submodule_search_locations, (
        "silero-vad is not installed (pip install --no-deps silero-vad)"
    )
    return Path(spec.submodule_search_locations[0]) / "data" / "silero_vad_16k_sequence.onnx"


def prepare(model: onnx.ModelProto, rows: int) -> onnx.ModelProto:
    """The preprocessing Silero needs before TVM's importer accepts it:
    1. fix ``sequence_length`` (the LSTM is unrolled over it);
    2. fold constants, *including* ConstantOfShape, which onnxscript keeps by default:
       the reflect Pad's pads come from ConstantOfShape -> Concat -> Reshape -> Slice ->
       Transpose -> Reshape -> Cast, and TVM's Pad refuses non-constant pads."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = rows
    model = onnx.shape_inference.infer_shapes(model)
    model_ir = ir.serde.deserialize_model(model)
    optimize_ir(
        model_ir,
        should_fold=lambda n: (
            True if n.op_type == "ConstantOfShape" and n.domain in ("", "ai.onnx") else None
        ),
    )
    return ir.serde.serialize_model(model_ir)


def speech_signal(tmp_path: Path, samples: int, seed: int = 0) -> np.ndarray:
    """Silence, espeak-ng speech, silence, with light noise; 16 kHz float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    if shutil.which("espeak-ng"):
        wav = tmp_path / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-w", str(wav), "hello world"],
            check=True,
            capture_output=True,
        )
        with wave.open(str(wav)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        # Linear resampling to 16 kHz is enough for a VAD input.
        t_out = np.arange(int(len(pcm) * RATE / rate)) / RATE
        speech = np.interp(t_out, np.arange(len(pcm)) / rate, pcm).astype(np.float32)
    else:  # a voiced-vowel stand-in: harmonics of 140 Hz with a syllable envelope
        t = np.arange(RATE) / RATE
        speech = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12)).astype(np.float32)
        speech *= 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)).astype(np.float32)
    signal = np.zeros(samples, np.float32)
    start = samples // 4
    n = min(len(speech), samples - start)
    signal[start : start + n] = speech[:n]
    signal += 0.003 * rng.standard_normal(samples).astype(np.float32)
    return np.clip(signal, -1, 1)


def frames(signal: np.ndarray, rows: int, offset: int) -> np.ndarray:
    """Rows of 64 context samples + 512 new samples, as Silero's streaming loop feeds them."""
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), signal])
    starts = offset + np.arange(rows) * CHUNK
    return np.stack([padded[s : s + CONTEXT + CHUNK] for s in starts]).astype(np.float32)


def test_silero_vad_matches_onnxruntime(tmp_path: Path) -> None:
    path = silero_path()
    model = prepare(onnx.load(str(path)), ROWS)
    assert "LSTM" in {n.op_type for n in model.graph.node}
    with installed():
        mod = from_onnx(model)
    ex = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    # Two consecutive windows (3 s): the second starts from the first's LSTM state, as in
    # streaming use, so h/c inputs are realistic rather than zeros only.
    signal = speech_signal(tmp_path, 2 * ROWS * CHUNK)
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    h_ref, c_ref = h, c
    probs = []
    errors: dict[str, float] = {"speech_probs": 0.0, "hn": 0.0, "cn": 0.0}
    for window in range(2):
        x = frames(signal, ROWS, window * ROWS * CHUNK)
        expected = ref.run(None, {"input": x, "h": h_ref, "c": c_ref})
        out = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(h), tvm.runtime.tensor(c))
        got = [o.numpy() for o in out]
        for name, g, e in zip(errors, got, expected):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
            errors[name] = max(errors[name], float(np.abs(g - e).max()))
        _, h, c = got
        _, h_ref, c_ref = expected
        probs.append(expected[0])
    print(f"Silero VAD max abs error vs ONNX Runtime: {errors}")
    # The input is meaningful only if both classes occur.
    all_probs = np.concatenate(probs)
    assert all_probs.max() > 0.5 and all_probs.min() < 0.2, all_probs
