"""Locate the aarch64 cross toolchain and emulator on the build machine.

Each finder returns a path or raises a one-line ``TargetError`` that names the Debian
package to install, so ``edgec`` can print it as is.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edgec.errors import TargetError

CXX = "aarch64-linux-gnu-g++"
OBJDUMP = "aarch64-linux-gnu-objdump"
# Debian ships both a dynamic and (in qemu-user-static) a static build of the emulator.
QEMU_NAMES = ("qemu-aarch64", "qemu-aarch64-static")
# libc6-arm64-cross (pulled in by g++-aarch64-linux-gnu) installs the target's libc here;
# qemu needs it as the prefix for the dynamic loader and libstdc++.
SYSROOT = Path("/usr/aarch64-linux-gnu")

CXX_PACKAGE = "g++-aarch64-linux-gnu"
QEMU_PACKAGE = "qemu-user"
OBJDUMP_PACKAGE = "binutils-aarch64-linux-gnu"


@dataclass(frozen=True)
class Toolchain:
    """Everything needed to build for and run on aarch64 from this machine."""

    cxx: Path
    qemu: Path
    sysroot: Path


def _which(name: str, package: str) -> Path:
    found = shutil.which(name)
    if found is None:
        raise TargetError(f"{name} not found: install the Debian package {package}")
    return Path(found)


def find_cxx() -> Path:
    """Path of ``aarch64-linux-gnu-g++``."""
    return _which(CXX, CXX_PACKAGE)


def find_objdump() -> Path:
    """Path of ``aarch64-linux-gnu-objdump`` (for inspecting generated code)."""
    return _which(OBJDUMP, OBJDUMP_PACKAGE)


def find_qemu() -> Path:
    """Path of the aarch64 user-mode emulator."""
    for name in QEMU_NAMES:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    raise TargetError(f"{QEMU_NAMES[0]} not found: install the Debian package {QEMU_PACKAGE}")


def find_sysroot() -> Path:
    """The aarch64 sysroot holding the target's dynamic loader and C/C++ libraries."""
    loader = SYSROOT / "lib" / "ld-linux-aarch64.so.1"
    if not loader.exists():
        raise TargetError(
            f"aarch64 sysroot {SYSROOT} not found: install the Debian package {CXX_PACKAGE}"
        )
    return SYSROOT


def find_toolchain() -> Toolchain:
    """Cross compiler, emulator and sysroot, checked in that order."""
    return Toolchain(cxx=find_cxx(), qemu=find_qemu(), sysroot=find_sysroot())
