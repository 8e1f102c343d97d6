"""The aarch64 TVM device runtime, taken from the official aarch64 wheels.

The host's TVM cannot run on the device, so the runtime libraries
(``libtvm_runtime.so``, ``libtvm_ffi.so``) and the tvm_ffi headers come from the
aarch64 wheels of exactly the TVM versions installed here: a module exported by this
TVM is only guaranteed to load into the same runtime version.

The cache entry appears all at once: it is filled in a temporary folder beside it and
renamed into place under a file lock, so a killed run never leaves half a cache and two
processes filling it at once do the work once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from edgec.atomic import file_lock
from edgec.errors import TargetError

WHEEL_PLATFORM = "manylinux_2_28_aarch64"
# Only the ffi wheel is CPython-specific, and only its Python extension, which is not
# used: libtvm_ffi.so and the headers are the same for every Python version.
WHEEL_PYTHON = "3.11"
_COMPLETE = ".complete"


@dataclass(frozen=True)
class RuntimeLibs:
    """An unpacked aarch64 runtime: ``lib_dir`` holds the .so files."""

    root: Path
    tag: str

    @property
    def lib_dir(self) -> Path:
        return self.root / "lib"

    @property
    def include_dir(self) -> Path:
        return self.root / "include"

    @property
    def libraries(self) -> tuple[Path, Path]:
        return (self.lib_dir / "libtvm_runtime.so", self.lib_dir / "libtvm_ffi.so")


def cache_dir() -> Path:
    """edgec's cache: ``$EDGEC_CACHE_DIR``, else the user cache folder + ``edgec``."""
    env = os.environ.get("EDGEC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("edgec", appauthor=False))
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "edgec"


def installed_versions() -> tuple[str, str]:
    """Versions of apache-tvm and apache-tvm-ffi installed on the host."""
    try:
        return metadata.version("apache-tvm"), metadata.version("apache-tvm-ffi")
    except metadata.PackageNotFoundError as err:
        raise TargetError(f"{err.name} is not installed: pip install edgec's dependencies") from err


def runtime_tag() -> str:
    """Name of the cache entry for the installed versions."""
    tvm_version, ffi_version = installed_versions()
    return f"tvm-{tvm_version}_ffi-{ffi_version}"


def download_wheels(dest: Path) -> list[Path]:
    """Download the aarch64 wheels matching the installed TVM into ``dest``."""
    tvm_version, ffi_version = installed_versions()
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--platform", WHEEL_PLATFORM, "--python-version", WHEEL_PYTHON,
        "--disable-pip-version-check", "--quiet", "--dest", str(dest),
        f"apache-tvm=={tvm_version}", f"apache-tvm-ffi=={ffi_version}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise TargetError(
            f"could not download the aarch64 TVM runtime wheels "
            f"(apache-tvm=={tvm_version}, apache-tvm-ffi=={ffi_version}): {last}"
        )
    return sorted(dest.glob("*.whl"))


def _members(names: list[str]) -> dict[str, str]:
    """Map wheel members to paths in the cache entry: the two libraries and the headers."""
    wanted: dict[str, str] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if ".." in parts or name.startswith("/"):
            continue  # never write outside the cache entry
        if name in ("tvm/lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so"):
            wanted[name] = "lib/" + parts[-1]
        elif name.startswith("tvm_ffi/include/") and not name.endswith("/"):
            wanted[name] = "include/" + name[len("tvm_ffi/include/") :]
    return wanted


def extract_runtime(wheels: list[Path], dest: Path) -> None:
    """Unpack the runtime libraries and headers from ``wheels`` into ``dest``."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for member, target in _members(zf.namelist()).items():
                out = dest / target
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    runtime = RuntimeLibs(dest, dest.name)
    missing = [p.name for p in runtime.libraries if not p.is_file()]
    if not (runtime.include_dir / "tvm" / "ffi" / "function.h").is_file():
        missing.append("tvm_ffi headers")
    if missing:
        raise TargetError(f"the aarch64 TVM wheels lack {', '.join(missing)}")


def ensure_runtime() -> RuntimeLibs:
    """The aarch64 runtime for the installed TVM, downloaded on first use."""
    tag = runtime_tag()
    parent = cache_dir() / "aarch64-runtime"
    final = parent / tag
    if (final / _COMPLETE).is_file():
        return RuntimeLibs(final, tag)
    with file_lock(parent / f".{tag}.lock"):
        if (final / _COMPLETE).is_file():  # another process filled it while we waited
            return RuntimeLibs(final, tag)
        # Holding the lock, any leftover temp folder is from a killed run.
        for stale in parent.glob(f".{tag}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete entry from an older, unlocked writer
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{tag}.tmp-", dir=parent))
        try:
            wheels_dir = tmp / "wheels"
            wheels_dir.mkdir()
            extract_runtime(download_wheels(wheels_dir), tmp / "entry")
            (tmp / "entry" / _COMPLETE).write_text(tag + "\n")
            os.rename(tmp / "entry", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return RuntimeLibs(final, tag)
