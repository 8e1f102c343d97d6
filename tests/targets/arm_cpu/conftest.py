"""Shared helpers for the arm-cpu deploy tests: aarch64 targets and module export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import tvm
from edgec.targets.arm_cpu import deploy

# Written out here rather than taken from the presets, so these tests pin the exact
# targets whose code they check (dotprod on the A55 only).
ARM_TARGETS = {
    "cortex-a72": {
        "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"],
    },
    "cortex-a55": {
        "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55",
        "mattr": ["+neon", "+dotprod"],
    },
}  # fmt: skip


@pytest.fixture(scope="session")
def arm_build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[tvm.IRModule, str], Path]:
    """Compile a Relax module for a named aarch64 target and export it as a .so."""
    out_dir = tmp_path_factory.mktemp("arm_libs")
    counter = iter(range(1_000_000))

    def build(mod: tvm.IRModule, cpu: str) -> Path:
        executable = tvm.compile(mod, tvm.target.Target(ARM_TARGETS[cpu]))
        path = out_dir / f"{cpu}_{next(counter)}.so"
        deploy.export_library(executable, path)
        return path

    return build
