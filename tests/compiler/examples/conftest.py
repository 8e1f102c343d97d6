"""Shared fixtures: one MiniLM export per test session, into a private cache."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh MiniLM export (timed: the figure shows with ``pytest -s``)."""
    from edgec.examples import models

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("EDGEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    try:
        start = time.perf_counter()
        path = models.model_path("minilm")
        print(f"\nMiniLM export: {time.perf_counter() - start:.1f} s")
    finally:
        mp.undo()
    return path
