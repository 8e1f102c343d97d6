"""edgec.examples.models: locating the packaged models, exporting and caching MiniLM."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edgec.errors import EdgecError
from edgec.examples import models
from edgec.examples.models import REAL_MODELS, model_path

PACKAGED = ["ppocr-cls", "ppocr-det", "ppocr-rec", "silero-vad"]


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_model_located_with_declared_inputs(name: str) -> None:
    path = model_path(name)
    assert path.is_file() and path.suffix == ".onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    declared = REAL_MODELS[name].input_shapes
    assert [i.name for i in sess.get_inputs()] == list(declared)
    for inp in sess.get_inputs():
        # Fixed dims in the file must agree with our default shapes; symbolic ones are free.
        for dim, want in zip(inp.shape, declared[inp.name], strict=True):
            assert not isinstance(dim, int) or dim == want


def test_locating_does_not_import_the_packages() -> None:
    # rapidocr_onnxruntime imports cv2 and silero_vad imports torchaudio: never load them.
    code = (
        "import sys; from edgec.examples.models import model_path;"
        "[model_path(n) for n in ('ppocr-cls', 'ppocr-det', 'ppocr-rec', 'silero-vad')];"
        "assert 'rapidocr_onnxruntime' not in sys.modules and 'silero_vad' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "silero_vad" else real(n, *a)
    )
    with pytest.raises(EdgecError, match="pip install --no-deps silero-vad"):
        model_path("silero-vad")


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(EdgecError, match="ppocr-cls"):
        model_path("resnet")


def test_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path))
    assert models.cache_dir() == tmp_path
    monkeypatch.delenv("EDGEC_CACHE_DIR")
    assert models.cache_dir() == Path.home() / ".cache" / "edgec"


def _fake_export(path: Path, seq_len: int = 128) -> float:
    path.write_bytes(b"onnx")
    (path.parent / "model.onnx.data").write_bytes(b"weights")
    return 0.0


def test_cache_is_atomic_and_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(
        models, "export_minilm", lambda p, s=128: calls.append(p) or _fake_export(p)
    )
    first = models.minilm_onnx()
    assert first.name == "model.onnx" and first.parent.name.startswith("minilm-")
    assert (first.parent / "model.onnx.data").read_bytes() == b"weights"
    assert models.minilm_onnx() == first and len(calls) == 1
    # Only the final folder is left: the temporary export folder was renamed, not copied.
    assert [p.name for p in (tmp_path / "models").iterdir()] == [first.parent.name]


def test_cache_race_loser_uses_winner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Another process finishes its export while ours runs: ours is discarded."""
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path))
    final = tmp_path / "models" / f"minilm-{models._minilm_key(128)}"

    def export_while_other_wins(path: Path, seq_len: int = 128) -> float:
        final.mkdir(parents=True)
        (final / "model.onnx").write_bytes(b"winner")
        (final / "model.onnx.data").write_bytes(b"winner")
        return _fake_export(path)

    monkeypatch.setattr(models, "export_minilm", export_while_other_wins)
    path = models.minilm_onnx()
    assert path == final / "model.onnx" and path.read_bytes() == b"winner"
    assert [p.name for p in (tmp_path / "models").iterdir()] == [final.name]


def test_cache_key_changes_with_sequence_length() -> None:
    assert models._minilm_key(128) != models._minilm_key(64)


@pytest.mark.slow
def test_minilm_export_interface(minilm_file: Path) -> None:
    data = minilm_file.parent / "model.onnx.data"
    assert data.stat().st_size > 80e6 > minilm_file.stat().st_size  # weights are external
    proto = onnx.load(str(minilm_file), load_external_data=False)
    assert proto.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL
    sess = ort.InferenceSession(str(minilm_file), providers=["CPUExecutionProvider"])
    assert {i.name: i.shape for i in sess.get_inputs()} == {
        "input_ids": [1, 128],
        "attention_mask": [1, 128],
        "token_type_ids": [1, 128],
    }
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [("last_hidden_state", [1, 128, 384])]


@pytest.mark.slow
def test_minilm_export_matches_torch(minilm_file: Path) -> None:
    import torch
    from edgec.examples.data import example_inputs
    from transformers import AutoModel

    feed = example_inputs("minilm", seed=3)[0]
    sess = ort.InferenceSession(str(minilm_file), providers=["CPUExecutionProvider"])
    got = sess.run(None, feed)[0]
    bert = AutoModel.from_pretrained(str(models.minilm_weights_dir()), local_files_only=True)
    with torch.no_grad():
        want = bert.eval()(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


@pytest.mark.slow
def test_minilm_two_processes_race(tmp_path: Path) -> None:
    """Two exports into one empty cache at once: both succeed, one folder remains."""
    env = {**os.environ, "EDGEC_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code = "from edgec.examples.models import model_path; print(model_path('minilm'))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    assert [p.name for p in (tmp_path / "models").iterdir()] == [Path(outs[0]).parent.name]
    ort.InferenceSession(outs[0], providers=["CPUExecutionProvider"])
