"""edgec.examples.ocr: the recognizer's character set, greedy CTC, edit distance."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.examples.models import model_path
from edgec.examples.ocr import ctc_greedy, edit_distance, rec_charset


def test_charset_of_the_recognizer() -> None:
    chars = rec_charset(model_path("ppocr-rec"))
    assert chars[0] == "" and chars[-1] == " " and len(chars) == 6625  # the output's classes
    assert {"a", "Z", "7"} <= set(chars)


def test_a_model_without_a_charset_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'character' metadata"):
        rec_charset(model_path("ppocr-cls"))


def test_greedy_ctc_merges_repeats_and_drops_blanks() -> None:
    chars = ["", "a", "b", " "]
    steps = [3, 1, 1, 0, 1, 2, 2, 0, 0, 3]  # " aa_abb__ " -> " aab " -> "aab"
    probs = np.eye(4)[steps]
    assert ctc_greedy(probs, chars) == "aab"


@pytest.mark.parametrize("a, b, d", [("", "", 0), ("abc", "", 3), ("kitten", "sitting", 3),
                                     ("flaw", "lawn", 2), ("same", "same", 0)])
def test_edit_distance(a: str, b: str, d: int) -> None:
    assert edit_distance(a, b) == d == edit_distance(b, a)
