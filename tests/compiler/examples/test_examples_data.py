"""edgec.examples.data: generated inputs are deterministic and the real models see them
as what they are meant to be (text direction, text regions, speech, similar sentences)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from edgec.errors import EdgecError
from edgec.examples import audio, data, images
from edgec.examples.models import REAL_MODELS, model_path

# Measured on 10 seeds x 100 lines: 0.96 to 1.00, mean 0.978 (seed 0, 200 lines: 0.97).
CLS_MIN_ACCURACY = 0.93


def _session(name: str):  # type: ignore[no-untyped-def]
    return ort.InferenceSession(str(model_path(name)), providers=["CPUExecutionProvider"])


def _same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


@pytest.mark.parametrize("name", ["ppocr-cls", "ppocr-det", "ppocr-rec", "silero-vad"])
def test_example_inputs_deterministic_and_shaped(name: str) -> None:
    shapes = {"x": (1, 3, 320, 320)} if name == "ppocr-det" else None
    feeds = data.example_inputs(name, n=2, seed=5, shapes=shapes)
    assert _same(feeds, data.example_inputs(name, n=2, seed=5, shapes=shapes))
    assert not _same(feeds, data.example_inputs(name, n=2, seed=6, shapes=shapes))
    want = {**REAL_MODELS[name].input_shapes, **(shapes or {})}
    for feed in feeds:
        assert {k: v.shape for k, v in feed.items()} == want
        assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in feed.values())
    _session(name).run(None, feeds[0])


def test_minilm_inputs_deterministic_and_padded() -> None:
    feeds = data.example_inputs("minilm", n=3, seed=1)
    assert _same(feeds, data.example_inputs("minilm", n=3, seed=1))
    for feed in feeds:
        assert {k: (v.shape, v.dtype) for k, v in feed.items()} == {
            k: ((1, 128), np.dtype(np.int64))
            for k in ("input_ids", "attention_mask", "token_type_ids")
        }
        ids, mask = feed["input_ids"][0], feed["attention_mask"][0]
        length = int(mask.sum())
        assert ids[0] == 101 and ids[length - 1] == 102  # [CLS] ... [SEP]
        assert (ids[length:] == 0).all() and (mask[length:] == 0).all()  # padding


def test_sentences_are_real_and_seeded() -> None:
    got = data.sentences(50, seed=2)
    assert got == data.sentences(50, seed=2) != data.sentences(50, seed=3)
    assert len(set(got)) == 50
    assert all(s[0].isupper() and s.endswith(".") and " " in s for s in got)


def test_generators_deterministic() -> None:
    x1, a1 = data.text_line_images(8, seed=4)
    x2, a2 = data.text_line_images(8, seed=4)
    assert np.array_equal(x1, x2) and np.array_equal(a1, a2)
    p1, b1 = data.text_page_images(1, 160, 224, seed=4)
    p2, b2 = data.text_page_images(1, 160, 224, seed=4)
    assert np.array_equal(p1, p2) and np.array_equal(b1[0], b2[0])
    s1, m1 = data.speech(3.0, seed=4)
    s2, m2 = data.speech(3.0, seed=4)
    assert np.array_equal(s1, s2) and np.array_equal(m1, m2)


def test_cls_predicts_rendered_direction() -> None:
    x, angles = data.text_line_images(200, seed=0)
    assert x.shape == (200, 3, 48, 192) and x.min() >= -1 and x.max() <= 1
    assert 60 < (angles == 180).sum() < 140  # both directions occur
    probs = _session("ppocr-cls").run(None, {"x": x})[0]
    predicted = np.array([0, 180])[probs.argmax(1)]
    accuracy = float((predicted == angles).mean())
    assert accuracy >= CLS_MIN_ACCURACY, accuracy


def test_rec_reads_rendered_lines() -> None:
    """The recognizer reads the rendered lines back (measured on 7 seeds x 32 lines:
    character error rate 0.076-0.132, 24-28 lines exact; the misses are mostly spaces
    dropped and the longest lines squeezed to 320 pixels)."""
    from edgec.examples.ocr import ctc_greedy, edit_distance, rec_charset

    x, texts = data.upright_text_lines(32, seed=0)
    assert x.shape == (32, 3, 48, 320) and x.min() >= -1 and x.max() <= 1
    chars = rec_charset(model_path("ppocr-rec"))
    read = [ctc_greedy(p, chars) for p in _session("ppocr-rec").run(None, {"x": x})[0]]
    cer = sum(edit_distance(r, t) for r, t in zip(read, texts)) / sum(map(len, texts))
    assert cer < 0.15 and sum(r == t for r, t in zip(read, texts)) >= 20, (cer, read)


@pytest.mark.parametrize("size", [320, 640])
def test_det_finds_text_on_rendered_pages(size: int) -> None:
    pages, boxes = data.text_page_images(2, size, size, seed=0)
    out = _session("ppocr-det").run(None, {"x": pages})[0]
    assert out.shape == (2, 1, size, size)
    for prob, page_boxes in zip(out[:, 0], boxes):
        assert len(page_boxes) >= 3
        inside = np.zeros(prob.shape, dtype=bool)
        for x0, y0, x1, y1 in page_boxes:
            inside[y0:y1, x0:x1] = True
            # Every drawn line is found (0.3 is PP-OCR's binarization threshold).
            assert (prob[y0:y1, x0:x1] > 0.3).mean() > 0.1
        # Measured: mean 0.33-0.47 inside line boxes, < 1e-5 outside.
        assert prob[inside].mean() > 0.2
        assert prob[~inside].mean() < 0.01


def test_det_on_noise_is_near_zero() -> None:
    """Why the generators exist: uniform noise gives the detector nothing to find."""
    rng = np.random.default_rng(0)
    noise = images.det_normalize(rng.integers(0, 256, (320, 320, 3), dtype=np.uint8))
    out = _session("ppocr-det").run(None, {"x": noise[None]})[0]
    assert (out > 0.3).mean() < 0.001


def test_vad_frames_follow_silero_layout() -> None:
    clip = np.arange(3 * 512 - 100, dtype=np.float32)
    frames = audio.vad_frames(clip)
    assert frames.shape == (3, 576)
    assert (frames[0, :64] == 0).all()  # no context before the first frame
    assert np.array_equal(frames[1, :64], clip[512 - 64 : 512])
    assert np.array_equal(frames[1, 64:], clip[512:1024])
    assert (frames[2, 64 + 412 :] == 0).all()  # zero-padded tail


def test_vad_separates_speech_from_silence() -> None:
    clip, mask = data.speech(30.0, seed=0)
    assert clip.dtype == np.float32 and clip.shape == (30 * 16000,)
    assert 0.3 < mask.mean() < 0.9  # both classes present
    frames = audio.vad_frames(clip)
    state = np.zeros((1, 1, 128), dtype=np.float32)
    probs = _session("silero-vad").run(None, {"input": frames, "h": state, "c": state})[0]
    pad = np.zeros(frames.shape[0] * 512, dtype=bool)
    pad[: mask.size] = mask
    per_frame = pad.reshape(-1, 512)
    speech, silence = probs[per_frame.all(1)], probs[~per_frame.any(1)]
    # Measured (seeds 0-3, 30 s): speech mean 0.88-0.93, silence mean 0.009-0.014.
    assert speech.mean() > 0.75 and np.median(speech) > 0.9
    assert silence.mean() < 0.05 and silence.max() < 0.5


def test_vad_inputs_default_has_both_classes() -> None:
    probs = _session("silero-vad").run(None, data.vad_inputs(64, seed=0))[0]
    assert probs.min() < 0.1 and probs.max() > 0.9


def test_missing_espeak_names_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio.shutil, "which", lambda _: None)
    with pytest.raises(EdgecError, match="apt-get install espeak-ng"):
        data.speech(1.0)


def test_missing_fonts_names_debian_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(images, "FONT_DIR", tmp_path)
    images.fonts.cache_clear()
    try:
        with pytest.raises(EdgecError, match="fonts-dejavu-core"):
            data.text_line_images(1)
    finally:
        monkeypatch.undo()
        images.fonts.cache_clear()


@pytest.mark.slow
def test_minilm_near_duplicates_closer_than_unrelated(minilm_file: Path) -> None:
    sess = ort.InferenceSession(str(minilm_file), providers=["CPUExecutionProvider"])

    def embed(text: str) -> np.ndarray:
        feed = data.tokenize([text])[0]
        hidden = sess.run(None, feed)[0][0]
        mask = feed["attention_mask"][0, :, None].astype(np.float32)
        vec = (hidden * mask).sum(0) / mask.sum()  # the model's mean pooling
        return vec / np.linalg.norm(vec)

    pool = data.sentences(20, seed=7)
    for text, unrelated in zip(pool[:10], pool[10:]):
        words = text.rstrip(".").split()
        near = " ".join(words[:-1]).lower() + "."  # drop the last word, change case
        anchor = embed(text)
        # Measured: near 0.88-0.99, unrelated -0.03-0.39 (smallest gap 0.60).
        assert anchor @ embed(near) > anchor @ embed(unrelated) + 0.3, (text, unrelated)
