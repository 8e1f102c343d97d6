"""Calibration data loading: the three layouts, the split, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgec import calibration
from edgec.errors import InputError
from edgec.frontend import TensorSpec

INPUTS = [TensorSpec("x", (1, 3, 4), "float32"), TensorSpec("ids", (1, 5), "int64")]


def _stacked(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((n, 3, 4)).astype(np.float32),
            "ids": rng.integers(0, 9, (n, 5)).astype(np.int64)}


def test_npz_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", **_stacked(10))
    feeds = calibration.load_samples(tmp_path / "c.npz", INPUTS)
    assert len(feeds) == 10 and feeds[3]["x"].shape == (1, 3, 4)
    np.testing.assert_array_equal(feeds[3]["x"][0], _stacked(10)["x"][3])


def test_npy_folder_casts_benign_dtypes(tmp_path: Path) -> None:
    s = _stacked(4)
    np.save(tmp_path / "x.npy", s["x"].astype(np.float64))
    np.save(tmp_path / "ids.npy", s["ids"].astype(np.int32))
    feeds = calibration.load_samples(tmp_path, INPUTS)
    assert len(feeds) == 4
    assert feeds[0]["x"].dtype == np.float32 and feeds[0]["ids"].dtype == np.int64


def test_npz_folder_one_sample_each(tmp_path: Path) -> None:
    s = _stacked(3)
    for i in range(3):
        np.savez(tmp_path / f"s{i}.npz", x=s["x"][i:i + 1], ids=s["ids"][i:i + 1])
    assert len(calibration.load_samples(tmp_path, INPUTS)) == 3


def test_split_holds_every_kth_out() -> None:
    feeds = [{"i": np.array(i)} for i in range(10)]
    cs = calibration.split(feeds, 5)
    assert [int(f["i"]) for f in cs.held_out] == [4, 9]
    assert len(cs.calib) == 8
    assert len(calibration.split(feeds[:2], 5).held_out) == 1


@pytest.mark.parametrize("setup,match", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "holds no .npy or .npz"),
    (lambda p: (p.mkdir(), np.save(p / "x.npy", np.zeros((2, 3, 4), np.float32))),
     "no array for input 'ids'"),
    (lambda p: (p.mkdir(), np.save(p / "x.npy", np.zeros((2, 3, 5), np.float32)),
                np.save(p / "ids.npy", np.zeros((2, 5), np.int64))), "has shape"),
    (lambda p: (p.mkdir(), np.save(p / "x.npy", np.zeros((2, 3, 4), np.float32)),
                np.save(p / "ids.npy", np.zeros((3, 5), np.int64))), "different sample counts"),
    (lambda p: (p.mkdir(), np.save(p / "x.npy", np.zeros((2, 3, 4), np.float32)),
                np.save(p / "ids.npy", np.zeros((2, 5), np.int64)),
                np.save(p / "extra.npy", np.zeros(2))), "'extra' is not a model input"),
    (lambda p: (p.mkdir(), np.save(p / "x.npy", np.zeros((2, 3, 4), np.float32)),
                np.save(p / "ids.npy", np.zeros((2, 5), np.float32))), "dtype float32"),
    (lambda p: (p.mkdir(), np.save(p / "x.npy", np.array([{"a": 1}], dtype=object),
                                   allow_pickle=True),
                np.save(p / "ids.npy", np.zeros((1, 5), np.int64))), "pickles are refused"),
])
def test_errors_are_clear(tmp_path: Path, setup, match: str) -> None:
    path = tmp_path / "calib"
    setup(path)
    with pytest.raises(InputError, match=match):
        calibration.load_samples(path, INPUTS)


def test_too_few_samples() -> None:
    with pytest.raises(InputError, match="need at least 2"):
        calibration.split([{"x": np.zeros(1)}], 5)


def test_dynamic_shape_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 3)))
    with pytest.raises(InputError, match="dynamic shape"):
        calibration.load_samples(tmp_path / "c.npz", [TensorSpec("x", ("N", 3), "float32")])
