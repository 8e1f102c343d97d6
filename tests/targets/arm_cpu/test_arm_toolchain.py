"""Missing aarch64 tools are reported as one line naming the Debian package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgec.errors import TargetError
from edgec.targets.arm_cpu import deploy, toolchain


@pytest.fixture
def empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH on which no tool exists."""
    monkeypatch.setenv("PATH", str(tmp_path))


def _one_line(err: pytest.ExceptionInfo[TargetError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_cross_compiler(empty_path: None) -> None:
    with pytest.raises(TargetError) as err:
        toolchain.find_cxx()
    assert _one_line(err) == (
        "aarch64-linux-gnu-g++ not found: install the Debian package g++-aarch64-linux-gnu"
    )


def test_missing_qemu(empty_path: None) -> None:
    with pytest.raises(TargetError) as err:
        toolchain.find_qemu()
    assert _one_line(err) == "qemu-aarch64 not found: install the Debian package qemu-user"


def test_missing_objdump(empty_path: None) -> None:
    with pytest.raises(TargetError, match="binutils-aarch64-linux-gnu"):
        toolchain.find_objdump()


def test_missing_sysroot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(toolchain, "SYSROOT", tmp_path / "absent")
    with pytest.raises(TargetError) as err:
        toolchain.find_sysroot()
    assert "g++-aarch64-linux-gnu" in _one_line(err)


def test_qemu_static_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "qemu-aarch64-static"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert toolchain.find_qemu() == fake


def test_run_module_reports_missing_qemu(empty_path: None, tmp_path: Path) -> None:
    lib = tmp_path / "m.so"
    lib.write_bytes(b"")
    with pytest.raises(TargetError, match="qemu-user"):
        deploy.run_module(lib, [np.zeros(2, np.float32)])


def test_export_reports_missing_cross_compiler(empty_path: None, tmp_path: Path) -> None:
    class NeverExported:
        def export_library(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("export must not start without a cross compiler")

    with pytest.raises(TargetError, match="g\\+\\+-aarch64-linux-gnu"):
        deploy.export_library(NeverExported(), tmp_path / "m.so")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.qemu
def test_toolchain_found_when_installed() -> None:
    tools = toolchain.find_toolchain()
    assert tools.cxx.name == "aarch64-linux-gnu-g++"
    assert tools.qemu.is_file() and (tools.sysroot / "lib").is_dir()
