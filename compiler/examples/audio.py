"""Synthetic but real-sounding speech for Silero VAD: espeak-ng reading real sentences.

Utterances are placed between stretches of silence and everything gets background
noise, so a clip holds both classes the VAD separates; a per-sample mask says where
speech was placed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
from edgec.errors import EdgecError
from edgec.examples.text import sentences

SAMPLE_RATE = 16000
# Silero VAD at 16 kHz: each frame is 512 new samples prefixed by the last 64 samples
# of the previous frame (silero_vad/sequence_vad.py, RATE_CONFIG and frame_blocks).
FRAME_SAMPLES = 512
CONTEXT_SAMPLES = 64
STATE_SHAPE = (1, 1, 128)

# Stock espeak-ng voices and variants (no mbrola voices: those need another program).
_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland")
_VARIANTS = ("", "+m3", "+m7", "+f2", "+f4")


def espeak(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """``text`` spoken by espeak-ng, as float32 in [-1, 1] at 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EdgecError("espeak-ng is not installed", hint="apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(wav)) as f:
            rate, width = f.getframerate(), f.getsampwidth()
            raw = f.readframes(f.getnframes())
    if width != 2:
        raise EdgecError(f"espeak-ng wrote {8 * width}-bit audio; expected 16-bit")
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return _resample(audio, rate, SAMPLE_RATE)


def _resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(src, dst)
    return resample_poly(audio, dst // g, src // g).astype(np.float32)


def speech(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 16 kHz clip of ``seconds``: silence, utterances, silence, ... plus noise.

    Returns the float32 audio and a bool mask, true on samples inside an utterance.
    Starts with silence; utterances are one sentence each, gaps 1 to 4 s (shorter
    for clips under 10 s), so about a third of the clip is silence.
    """
    rng = np.random.default_rng(seed)
    total = round(seconds * SAMPLE_RATE)
    audio = np.zeros(total, dtype=np.float32)
    mask = np.zeros(total, dtype=bool)
    # Short sentences (<= 100 characters, a few seconds spoken) keep speech and silence
    # balanced; gaps shrink for short clips so that even 2 s hold both classes.
    texts = iter(s for s in sentences(4 * max(8, int(seconds)), seed) if len(s) <= 100)
    gap_scale = min(1.0, seconds / 10.0)
    pos = int(rng.uniform(1.0, 4.0) * gap_scale * SAMPLE_RATE)
    while pos < total:
        text = next(texts, "Speech detection test.")
        voice = str(rng.choice(_VOICES)) + str(rng.choice(_VARIANTS))
        clip = espeak(text, voice, int(rng.integers(130, 200)), int(rng.integers(30, 70)))
        gain = rng.uniform(0.3, 0.9) / max(1e-6, float(np.abs(clip).max()))
        clip = clip[: total - pos] * np.float32(gain)
        audio[pos : pos + clip.size] = clip
        mask[pos : pos + clip.size] = True
        pos += clip.size + int(rng.uniform(1.0, 4.0) * gap_scale * SAMPLE_RATE)
    # Background noise 25-40 dB below full-scale speech: audible hiss, not speech-like.
    noise_level = 10 ** (-rng.uniform(25, 40) / 20)
    audio += rng.normal(0, noise_level, total).astype(np.float32)
    return np.clip(audio, -1, 1), mask


def vad_frames(audio: np.ndarray) -> np.ndarray:
    """Frame 16 kHz audio for silero_vad_16k_sequence: [frames, 64 context + 512 new].

    The context of the first frame is zeros; the last frame is zero-padded.
    """
    count = -(-audio.size // FRAME_SAMPLES)
    frames = np.zeros((count, FRAME_SAMPLES), dtype=np.float32)
    frames.reshape(-1)[: audio.size] = audio
    context = np.zeros((count, CONTEXT_SAMPLES), dtype=np.float32)
    context[1:] = frames[:-1, -CONTEXT_SAMPLES:]
    return np.concatenate([context, frames], axis=1)


def vad_inputs(seq: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A feed for silero_vad_16k_sequence: ``seq`` frames of speech() and zero h/c."""
    audio, _ = speech(seq * FRAME_SAMPLES / SAMPLE_RATE, seed)
    return {
        "input": vad_frames(audio)[:seq],
        "h": np.zeros(STATE_SHAPE, dtype=np.float32),
        "c": np.zeros(STATE_SHAPE, dtype=np.float32),
    }
