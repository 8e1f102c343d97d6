"""tutorials/04_linear_attention.ipynb runs top to bottom (detection, errors, speed, pass)
and its two plots show sane data: error vs m / l, latency vs N."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pytest

from tests.tutorials.conftest import execute_notebook

pytestmark = pytest.mark.slow


def _series(text: str, tag: str) -> dict:
    line = re.search(rf"^{tag} (\{{.*\}})$", text, re.MULTILINE)
    assert line is not None, f"{tag} not printed"
    return json.loads(line.group(1))


def test_linear_attention_notebook(tmp_path: Path) -> None:
    nb = execute_notebook("04_linear_attention.ipynb", tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "'N': 1024" in text
    assert "max change from padding keys: 0.0" in text
    assert "budget 0.001 (planning at 0.0005): changed []" in text
    assert "budget 0.1 (planning at 0.05): changed ['attn0: " in text
    assert "error measured at: softmax.V: no output projection" in text
    held = re.search(r"held out ([0-9.]+)", text)
    assert held is not None and float(held.group(1)) <= 0.1  # within the budget unseen

    # Both plots were drawn (shown inline and saved).
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2
    for name in ("error_vs_m.png", "latency_vs_n.png"):
        assert (tmp_path / name).stat().st_size > 0

    # Error vs m: FAVOR+ is unbiased, its error falls like 1/sqrt(m) on small logits
    # (16 -> 512 features: sqrt(32) ~ 5.7x); every step down is a real improvement there.
    err = _series(text, "error_vs_m")
    fav_small = err["error"]["favor, logit scale 0.25"]
    fav_big = err["error"]["favor, logit scale 1.0"]
    assert len(fav_small) == len(err["m"]) >= 4
    assert all(a > b for a, b in itertools.pairwise(fav_small))
    assert fav_small[0] / fav_small[-1] > 3
    # Trained-size logits: variance grows like exp(|q|^2 + |k|^2); far worse at any m.
    assert fav_big[0] > fav_big[-1] and fav_big[-1] > 10 * fav_small[-1]
    for scale in ("0.25", "1.0"):
        nys = err["error"][f"nystrom, logit scale {scale}"]
        assert len(nys) == len(err["l"]) and nys[-1] <= nys[0]
    assert all(0 < e < 10 for errs in err["error"].values() for e in errs)

    # Latency vs N: measured numbers only (no timed assertions: speed is for bench/).
    lat = _series(text, "latency_vs_N")
    assert lat["N"] == [128, 256, 512, 1024]
    assert set(lat["ms"]) == {"softmax", "favor:m=128", "nystrom:l=64", "elu", "ort softmax"}
    for ms in lat["ms"].values():
        assert len(ms) == len(lat["N"]) and all(math.isfinite(t) and t > 0 for t in ms)
    assert "bench/out/attention.md" in "".join(
        c.source for c in nb.cells if c.cell_type == "markdown")
