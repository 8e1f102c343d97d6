"""Package format: round trip, and every kind of damage gives one PackageError."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgec.errors import PackageError
from edgec.package import read_package, write_package


def _write(path: Path) -> Path:
    manifest = {"inputs": [], "outputs": [], "target": {"name": "host", "family": "host"}}
    write_package(path, manifest, {"model.so": b"\x7fELF fake library"}, {"model": {"macs": 1}})
    return path


def test_round_trip(tmp_path: Path) -> None:
    contents = read_package(_write(tmp_path / "p.edgec"))
    assert contents.files["model.so"] == b"\x7fELF fake library"
    assert contents.report == {"model": {"macs": 1}}
    assert contents.manifest["format_version"] == 1


def _rewrite(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(src) as zin:
        members = {n: zin.read(n) for n in zin.namelist()}
    members = edit(members)
    with zipfile.ZipFile(dst, "w") as zout:
        for n, d in members.items():
            zout.writestr(n, d)
    return dst


def _manifest_edit(fn):  # type: ignore[no-untyped-def]
    def edit(members):  # type: ignore[no-untyped-def]
        m = json.loads(members["manifest.json"])
        fn(m)
        members["manifest.json"] = json.dumps(m).encode()
        return members
    return edit


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda m: {**m, "model.so": b"tampered"}, "checksum mismatch"),
        (lambda m: {k: v for k, v in m.items() if k != "manifest.json"}, "no manifest.json"),
        (lambda m: {**m, "../evil.sh": b"rm -rf /"}, "unsafe member path"),
        (lambda m: {**m, "/etc/passwd": b"x"}, "unsafe member path"),
        (lambda m: {**m, "extra.bin": b"x"}, "not in the manifest"),
        (lambda m: {**m, "manifest.json": b"{not json"}, "not valid JSON"),
        (_manifest_edit(lambda m: m.update(format_version=99)), "format version 99"),
        (_manifest_edit(lambda m: m.update(format="other")), "format tag"),
        (_manifest_edit(lambda m: m["files"].update({"../x": "0"})), "unsafe member path"),
        (_manifest_edit(lambda m: m.pop("inputs")), "lacks 'inputs'"),
        (lambda m: {k: v for k, v in m.items() if k != "model.so"}, "missing"),
    ],
)
def test_damaged_packages(tmp_path: Path, edit, needle: str) -> None:  # type: ignore[no-untyped-def]
    bad = _rewrite(_write(tmp_path / "p.edgec"), tmp_path / "bad.edgec", edit)
    with pytest.raises(PackageError, match=needle):
        read_package(bad)


def test_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "x.edgec"
    p.write_bytes(b"hello")
    with pytest.raises(PackageError, match="not a zip"):
        read_package(p)


def test_truncated_zip(tmp_path: Path) -> None:
    good = _write(tmp_path / "p.edgec").read_bytes()
    for cut in (len(good) // 3, len(good) - 10):
        p = tmp_path / f"t{cut}.edgec"
        p.write_bytes(good[:cut])
        with pytest.raises(PackageError):
            read_package(p)


def test_bit_flips(tmp_path: Path) -> None:
    good = bytearray(_write(tmp_path / "p.edgec").read_bytes())
    rng = np.random.default_rng(1)
    p = tmp_path / "f.edgec"
    for _ in range(100):
        bad = bytearray(good)
        i = int(rng.integers(0, len(bad)))
        bad[i] ^= 0xFF
        p.write_bytes(bytes(bad))
        try:
            read_package(p)
        except PackageError:
            pass


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.edgec"
    with pytest.raises(ValueError):
        write_package(target, {}, {"../bad": b""}, {})
    assert list(tmp_path.iterdir()) == []
