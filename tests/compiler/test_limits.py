"""edgec.limits: model size and compile time limits give one clear EdgecError."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from edgec import limits
from edgec.errors import EdgecError, ModelError

from tests.conftest import make_mlp


@pytest.mark.parametrize(
    "text, expected",
    [("1000", 1000), ("2G", 2 << 30), ("512MiB", 512 << 20), ("1.5k", 1536), ("3 mb", 3 << 20)],
)
def test_parse_bytes(text: str, expected: int) -> None:
    assert limits.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "0", "lots", "2X"])
def test_parse_bytes_refuses(text: str) -> None:
    with pytest.raises(EdgecError, match="not a size"):
        limits.parse_bytes(text)


def test_max_model_bytes_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEC_MAX_MODEL_BYTES", raising=False)
    assert limits.max_model_bytes() == 2 << 30
    monkeypatch.setenv("EDGEC_MAX_MODEL_BYTES", "10M")
    assert limits.max_model_bytes() == 10 << 20
    assert limits.max_model_bytes("1k") == 1024  # the flag wins


def test_model_too_big(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "m.onnx")
    size = limits.check_model_size(model, limit=1 << 20)
    assert size == model.stat().st_size
    with pytest.raises(ModelError, match="above the limit of 100 bytes.*--max-model-bytes"):
        limits.check_model_size(model, limit=100)


def test_compile_timeout_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEC_COMPILE_TIMEOUT", raising=False)
    assert limits.compile_timeout() == 0
    monkeypatch.setenv("EDGEC_COMPILE_TIMEOUT", "nan")
    with pytest.raises(EdgecError, match="EDGEC_COMPILE_TIMEOUT"):
        limits.compile_timeout()
    assert limits.compile_timeout("2.5") == 2.5


def test_deadline_interrupts_python_work() -> None:
    with (
        pytest.raises(limits.CompileTimeoutError, match="exceeded the time limit of 0.2 s"),
        limits.compile_deadline(0.2),
    ):
        end = time.monotonic() + 5
        while time.monotonic() < end:
            pass
    with limits.compile_deadline(5):  # finishing in time leaves no alarm behind
        pass
    time.sleep(0.01)
