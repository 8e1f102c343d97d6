"""Realistic, seeded inputs for the real models (see ``edgec.examples.models``).

Everything is generated locally: sentences from ``pydoc_data.topics``, text images
rendered with DejaVu fonts, speech from espeak-ng. The same ``seed`` gives the same
arrays. Feeds are numpy arrays in the model's own layout and dtype.
"""

from __future__ import annotations

import numpy as np
from edgec.examples.audio import FRAME_SAMPLES, SAMPLE_RATE, speech, vad_frames, vad_inputs
from edgec.examples.images import text_line_images, text_page_images, upright_text_lines
from edgec.examples.models import real_model
from edgec.examples.text import minilm_inputs, sentences, tokenize

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "example_inputs",
    "minilm_inputs",
    "sentences",
    "speech",
    "text_line_images",
    "text_page_images",
    "tokenize",
    "upright_text_lines",
    "vad_frames",
    "vad_inputs",
]


def example_inputs(
    name: str,
    n: int = 1,
    seed: int = 0,
    *,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """``n`` model-ready feeds for a ``REAL_MODELS`` entry, at its default input shapes.

    ``shapes`` overrides them, e.g. ``{"x": (1, 3, 320, 320)}`` for a faster detector
    or ``{"input": (16, 576)}`` for fewer VAD frames; the batch dimension (or VAD
    sequence length) is taken from it too.
    """
    spec = real_model(name)
    shape = {**spec.input_shapes, **(shapes or {})}
    if name == "ppocr-cls":
        b, _, h, w = shape["x"]
        images, _ = text_line_images(n * b, h, w, seed)
        return [{"x": images[i * b : (i + 1) * b]} for i in range(n)]
    if name == "ppocr-rec":
        b, _, h, w = shape["x"]
        lines, _ = upright_text_lines(n * b, h, w, seed)
        return [{"x": lines[i * b : (i + 1) * b]} for i in range(n)]
    if name == "ppocr-det":
        b, _, h, w = shape["x"]
        pages, _ = text_page_images(n * b, h, w, seed)
        return [{"x": pages[i * b : (i + 1) * b]} for i in range(n)]
    if name == "silero-vad":
        seq = shape["input"][0]
        # One seed per feed, so each feed is a whole clip starting from zero state.
        return [vad_inputs(seq, seed * 1_000_003 + i) for i in range(n)]
    if name == "minilm":
        b, seq_len = shape["input_ids"]
        feeds = minilm_inputs(n * b, seq_len, seed)
        return [
            {k: np.concatenate([f[k] for f in feeds[i * b : (i + 1) * b]]) for k in feeds[0]}
            for i in range(n)
        ]
    raise AssertionError(f"REAL_MODELS entry {name!r} has no input generator")
