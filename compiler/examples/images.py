"""Rendered text images for the PP-OCR classifier and detector (Pillow + DejaVu fonts).

Random inputs are useless for these models (the detector answers ~0 everywhere), so
we render real words with real fonts, at random sizes and positions, add blur and
noise, and normalize exactly as PP-OCR's preprocessing does.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from edgec.errors import EdgecError
from edgec.examples.text import sentences, words

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
# PP-OCR det (PaddleOCR's NormalizeImage defaults) on x/255, per RGB channel.
DET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
DET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@functools.cache
def fonts() -> tuple[Path, ...]:
    """The DejaVu text fonts (the math font has no ordinary glyph shapes worth using)."""
    found = tuple(p for p in sorted(FONT_DIR.glob("DejaVu*.ttf")) if "Math" not in p.name)
    if not found:
        raise EdgecError(f"no DejaVu fonts in {FONT_DIR}", hint="apt-get install fonts-dejavu-core")
    return found


def _pil():  # type: ignore[no-untyped-def]
    try:
        from PIL import Image, ImageDraw, ImageFilter, ImageFont
    except ImportError:
        raise EdgecError("rendering text images needs Pillow", hint="pip install pillow") from None
    return Image, ImageDraw, ImageFilter, ImageFont


def _degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur and sensor-like noise on an HxWx3 uint8 image (as a camera would)."""
    Image, _, ImageFilter, _ = _pil()
    radius = float(rng.uniform(0.0, 1.2))
    pil = Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius))
    out = np.asarray(pil, dtype=np.float32)
    out += rng.normal(0.0, rng.uniform(0.0, 10.0), out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _colors(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Background and ink: mostly dark on light, sometimes light on dark (signs, screens)."""
    light = tuple(int(v) for v in rng.integers(170, 256, 3))
    dark = tuple(int(v) for v in rng.integers(0, 90, 3))
    return (dark, light) if rng.random() < 0.15 else (light, dark)


def render_line(text: str, rng: np.random.Generator) -> np.ndarray:
    """A tight crop of one rendered text line, HxWx3 uint8, with random margins."""
    Image, ImageDraw, _, ImageFont = _pil()
    fonts_ = fonts()
    font = ImageFont.truetype(str(fonts_[rng.integers(len(fonts_))]), int(rng.integers(18, 44)))
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), text, font=font
    )
    # Random margins = random position of the text inside the detected box.
    mx = rng.integers(2, 16, 2)
    my = rng.integers(1, 10, 2)
    size = (int(right - left + mx.sum()), int(bottom - top + my.sum()))
    bg, ink = _colors(rng)
    img = Image.new("RGB", size, bg)
    ImageDraw.Draw(img).text((int(mx[0] - left), int(my[0] - top)), text, font=font, fill=ink)
    return np.asarray(img)


def cls_normalize(crop: np.ndarray, height: int = 48, width: int = 192) -> np.ndarray:
    """PP-OCR cls preprocessing: resize to ``height`` keeping aspect (at most ``width``),
    scale to [-1, 1], pad on the right with 0; returns CHW float32."""
    Image = _pil()[0]
    h, w = crop.shape[:2]
    new_w = min(width, math.ceil(height * w / h))
    resized = np.asarray(Image.fromarray(crop).resize((new_w, height), Image.BILINEAR))
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :new_w] = (resized.transpose(2, 0, 1).astype(np.float32) / 255.0 - 0.5) / 0.5
    return out


def text_line_images(
    n: int, height: int = 48, width: int = 192, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rendered text lines as NCHW float32 in [-1, 1], and their angles (0 or 180).

    Half the lines (at random) are turned upside down, which is what the PP-OCR
    direction classifier detects: its class 0 is "0", class 1 is "180".
    """
    images, angles, _ = _lines(n, height, width, seed, turn=True)
    return images, angles


def upright_text_lines(
    n: int, height: int = 48, width: int = 320, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``n`` rendered text lines, all upright, as NCHW float32 in [-1, 1] (the PP-OCR
    recognizer's input: height 48, aspect kept, padded on the right), and their texts."""
    images, _, texts = _lines(n, height, width, seed, turn=False)
    return images, texts


def _lines(
    n: int, height: int, width: int, seed: int, turn: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    vocab = words(4 * n, seed)
    images = np.empty((n, 3, height, width), dtype=np.float32)
    # drawn either way, so upright lines are the same words, fonts and noise
    angles = np.where(rng.random(n) < 0.5, 180, 0).astype(np.int64)
    if not turn:
        angles[:] = 0
    texts = []
    for i in range(n):
        text = " ".join(vocab[4 * i : 4 * i + int(rng.integers(1, 5))])
        crop = render_line(text, rng)
        if angles[i] == 180:
            crop = crop[::-1, ::-1]
        images[i] = cls_normalize(_degrade(np.ascontiguousarray(crop), rng), height, width)
        texts.append(text)
    return images, angles, texts


def det_normalize(img: np.ndarray) -> np.ndarray:
    """PP-OCR det preprocessing: (x/255 - mean) / std per channel, HWC uint8 -> CHW float32."""
    out = (img.astype(np.float32) / 255.0 - DET_MEAN) / DET_STD
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def render_page(
    height: int, width: int, rng: np.random.Generator, lines: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """A page-like HxWx3 uint8 image with text lines; returns it and the boxes [k, 4]
    (x0, y0, x1, y1) of the lines actually drawn."""
    Image, ImageDraw, _, ImageFont = _pil()
    fonts_ = fonts()
    # Paper: a light tint with a gentle gradient, so the background is not flat.
    base = rng.integers(200, 250, 3).astype(np.float32)
    ramp = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None, None]
    paper = np.clip(base + ramp * rng.uniform(0, 20), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(paper, (height, width, 3)).copy())
    draw = ImageDraw.Draw(img)
    boxes = []
    y = int(rng.integers(4, max(5, height // 10)))
    for text in lines:
        size = int(rng.integers(max(10, height // 40), max(12, height // 14)))
        font = ImageFont.truetype(str(fonts_[rng.integers(len(fonts_))]), size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        # Drop words from the end until the line fits the page width.
        while right - left > width - 8 and " " in text:
            text = text.rsplit(" ", 1)[0]
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if y + bottom - top > height - 4 or right - left > width - 8:
            break
        x = int(rng.integers(4, max(5, width - (right - left) - 3)))
        ink = tuple(int(v) for v in rng.integers(0, 80, 3))
        draw.text((x - left, y - top), text, font=font, fill=ink)
        boxes.append((x, y, x + right - left, y + bottom - top))
        y += int((bottom - top) * rng.uniform(1.3, 2.5))
    return np.asarray(img), np.array(boxes, dtype=np.int64).reshape(-1, 4)


def text_page_images(
    n: int, height: int = 640, width: int = 640, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` pages with several lines of real text, NCHW float32 normalized like PP-OCR
    det, and for each page the text-line boxes [k, 4] (x0, y0, x1, y1) in pixels."""
    rng = np.random.default_rng(seed)
    texts = sentences(12 * n, seed)
    images = np.empty((n, 3, height, width), dtype=np.float32)
    all_boxes = []
    for i in range(n):
        lines = texts[12 * i : 12 * i + int(rng.integers(3, 13))]
        page, boxes = render_page(height, width, rng, lines)
        images[i] = det_normalize(_degrade(page, rng))
        all_boxes.append(boxes)
    return images, all_boxes
