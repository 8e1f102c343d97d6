"""Reading the PP-OCR recognizer's output: its character set (stored in the ONNX file's
metadata), greedy CTC decoding and the edit distance a character error rate counts."""

from __future__ import annotations

import os

import numpy as np


def rec_charset(model: str | os.PathLike[str]) -> list[str]:
    """Class index -> character of a PP-OCR rec model: 0 is CTC's blank, then the
    ``character`` metadata's lines, then the space PaddleOCR appends."""
    import onnx

    meta = onnx.load(str(model), load_external_data=False).metadata_props
    chars = next((p.value for p in meta if p.key == "character"), None)
    if chars is None:
        raise ValueError(f"{model}: no 'character' metadata (not a PP-OCR rec model)")
    return ["", *chars.splitlines(), " "]


def ctc_greedy(probs: np.ndarray, chars: list[str]) -> str:
    """Text of one (time steps x classes) output: the best class per step, repeats
    merged, blanks dropped, outer spaces stripped."""
    best = probs.argmax(-1)
    keep = (best != 0) & np.r_[True, best[1:] != best[:-1]]
    return "".join(chars[i] for i in best[keep]).strip()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions turning a into b."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


__all__ = ["ctc_greedy", "edit_distance", "rec_charset"]
