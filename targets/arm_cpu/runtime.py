"""Runs arm-cpu packages under qemu-aarch64 through the C++ deploy runner."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


class QemuExecutor:
    """Writes the library once, then runs it with ``deploy.run_module`` per call."""

    def __init__(self, library: bytes) -> None:
        from edgec.targets.arm_cpu import toolchain

        toolchain.find_qemu()  # fail now, with the package name, if qemu is missing
        self._dir = tempfile.TemporaryDirectory(prefix="edgec-arm-")
        self._lib = Path(self._dir.name) / "model.so"
        self._lib.write_bytes(library)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        from edgec.targets.arm_cpu.deploy import run_module

        outputs, _ = run_module(self._lib, arrays)
        return outputs

    def benchmark(self, arrays: list[np.ndarray], repeat: int, warmup: int) -> dict[str, float]:
        """Timings under emulation: they say nothing about a real board's speed."""
        from edgec.targets.arm_cpu.deploy import run_module

        _, timing = run_module(self._lib, arrays, repeat=max(1, repeat), warmup=warmup)
        runs = np.asarray(timing["runs_ms"], dtype=np.float64)
        return {
            "mean_ms": float(runs.mean()),
            "median_ms": float(np.median(runs)),
            "min_ms": float(runs.min()),
            "runs": int(runs.size),
            "emulated": 1.0,
        }
