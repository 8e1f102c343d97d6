"""The aarch64 runtime cache: right files, atomic, one download under concurrency."""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path

import pytest
from edgec.errors import TargetError
from edgec.targets.arm_cpu import runtime_libs

FAKE_MEMBERS = {
    "tvm/lib/libtvm_runtime.so": b"runtime",
    "tvm/lib/libtvm_compiler.so": b"not wanted on the device",
    "tvm_ffi/lib/libtvm_ffi.so": b"ffi",
    "tvm_ffi/include/tvm/ffi/function.h": b"// header",
    "tvm_ffi/include/dlpack/dlpack.h": b"// dlpack",
    "tvm_ffi/include/../../escape.h": b"zip slip",
}


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(root))
    return root


def fake_download(calls: list[int], delay: float = 0.0):
    def download(dest: Path) -> list[Path]:
        calls.append(1)
        time.sleep(delay)
        wheel = dest / "fake-0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            for name, data in FAKE_MEMBERS.items():
                zf.writestr(name, data)
        return [wheel]

    return download


def test_cache_dir_follows_env(cache: Path) -> None:
    assert runtime_libs.cache_dir() == cache


def test_tag_names_installed_versions() -> None:
    from importlib import metadata

    tag = runtime_libs.runtime_tag()
    assert metadata.version("apache-tvm") in tag and metadata.version("apache-tvm-ffi") in tag


def test_extracts_only_runtime_files(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(runtime_libs, "download_wheels", fake_download(calls))
    libs = runtime_libs.ensure_runtime()
    assert libs.root.parent == cache / "aarch64-runtime"
    assert [p.read_bytes() for p in libs.libraries] == [b"runtime", b"ffi"]
    assert (libs.include_dir / "dlpack" / "dlpack.h").is_file()
    files = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert not any("compiler" in f or "escape" in f or f.endswith(".whl") for f in files)
    # A second call reuses the entry.
    assert runtime_libs.ensure_runtime() == libs and len(calls) == 1


def test_failed_download_leaves_no_entry(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(dest: Path) -> list[Path]:
        (dest / "partial.whl").write_bytes(b"half")
        raise TargetError("could not download: network down")

    monkeypatch.setattr(runtime_libs, "download_wheels", broken)
    with pytest.raises(TargetError, match="network down"):
        runtime_libs.ensure_runtime()
    parent = cache / "aarch64-runtime"
    assert [p.name for p in parent.iterdir() if not p.name.endswith(".lock")] == []


def test_wheels_without_runtime_are_rejected(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def empty_wheel(dest: Path) -> list[Path]:
        wheel = dest / "empty-0-py3-none-any.whl"
        zipfile.ZipFile(wheel, "w").close()
        return [wheel]

    monkeypatch.setattr(runtime_libs, "download_wheels", empty_wheel)
    with pytest.raises(TargetError, match="libtvm_runtime.so"):
        runtime_libs.ensure_runtime()
    assert not (cache / "aarch64-runtime" / runtime_libs.runtime_tag()).exists()


def test_stale_temp_and_incomplete_entry_are_replaced(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = runtime_libs.runtime_tag()
    parent = cache / "aarch64-runtime"
    (parent / f".{tag}.tmp-killed").mkdir(parents=True)
    (parent / tag / "lib").mkdir(parents=True)  # no .complete marker
    monkeypatch.setattr(runtime_libs, "download_wheels", fake_download([]))
    libs = runtime_libs.ensure_runtime()
    assert libs.libraries[0].read_bytes() == b"runtime"
    assert not (parent / f".{tag}.tmp-killed").exists()


def test_concurrent_callers_download_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(runtime_libs, "download_wheels", fake_download(calls, delay=0.2))
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(runtime_libs.ensure_runtime().root)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and len(results) == 4
    assert len(calls) == 1
