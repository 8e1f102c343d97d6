"""Runs host packages in-process on TVM's Relax virtual machine."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import PackageError
from edgec.targets.host import host_cpu


def flatten_outputs(value: Any) -> list[np.ndarray]:
    """A VM result (tensor, or nested tuple of tensors) as a flat list of arrays."""
    if hasattr(value, "numpy"):
        return [value.numpy()]
    out: list[np.ndarray] = []
    for item in value:
        out.extend(flatten_outputs(item))
    return out


class HostExecutor:
    """Loads the package's library on this machine and calls ``main``."""

    def __init__(self, library: bytes, target: dict[str, Any]) -> None:
        import tvm
        from tvm import relax

        built_for = target.get("tvm", {}).get("mcpu")
        here = host_cpu()
        if built_for and built_for != here:
            # Code for another CPU may use instructions this one lacks (SIGILL).
            raise PackageError(
                f"package was built for host CPU {built_for!r}, this machine is {here!r}: "
                "rebuild it here with --target host"
            )
        self._dir = tempfile.TemporaryDirectory(prefix="edgec-host-")
        lib = Path(self._dir.name) / "model.so"
        lib.write_bytes(library)
        try:
            module = tvm.runtime.load_module(str(lib))
        except Exception as exc:
            raise PackageError(f"cannot load the package's library: {exc}") from None
        self._dev = tvm.cpu()
        self._vm = relax.VirtualMachine(module, self._dev)
        self._tensor = tvm.runtime.tensor

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        args = [self._tensor(a, self._dev) for a in arrays]
        try:
            return flatten_outputs(self._vm["main"](*args))
        except Exception as exc:
            # The manifest vouched for these inputs; the library disagrees with it.
            raise PackageError(
                f"the package's library rejected its manifest's inputs: {_last_line(exc)}"
            ) from None

    def benchmark(self, arrays: list[np.ndarray], repeat: int, warmup: int) -> dict[str, float]:
        args = [self._tensor(a, self._dev) for a in arrays]
        main = self._vm["main"]
        for _ in range(warmup):
            main(*args)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            main(*args)
            times.append((time.perf_counter() - start) * 1e3)
        return summarize_ms(times)


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def summarize_ms(times: list[float]) -> dict[str, float]:
    arr = np.asarray(times, dtype=np.float64)
    return {
        "mean_ms": float(arr.mean()),
        "median_ms": float(np.median(arr)),
        "min_ms": float(arr.min()),
        "runs": int(arr.size),
    }
