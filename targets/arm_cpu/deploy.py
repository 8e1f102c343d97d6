"""Export Relax VM executables for aarch64 and run them under qemu-aarch64.

The deploy runner (runner.cc) is compiled once per (runner source, runtime version)
into edgec's cache and runs the exported module with the aarch64 TVM runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from edgec.atomic import atomic_path
from edgec.errors import TargetError

from . import runtime_libs, toolchain

RUNNER_SOURCE = Path(__file__).with_name("runner.cc")
RUNNER_FLAGS = ("-std=c++17", "-O2")
# The dtypes runner.cc reads and writes (numpy names).
SUPPORTED_DTYPES = frozenset(
    ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]
)


def export_library(executable: Any, path: Path) -> None:
    """Write a ``tvm.relax.VMExecutable`` built for aarch64 as a shared library."""
    import tvm  # imported here: the other functions must work without loading TVM

    cxx = toolchain.find_cxx()
    # cross_compiler(name) would inherit create_shared's triple probe, which asks the
    # host compiler: a module without kernels then gets its bytecode blob as an x86-64
    # object and the link fails. Ask the cross compiler instead.
    fcompile = tvm.support.cc.cross_compiler(
        str(cxx), get_target_triple=tvm.support.cc.get_target_by_dump_machine(str(cxx))
    )
    with atomic_path(path) as tmp:
        executable.export_library(str(tmp), fcompile=fcompile)


def _runner_key(runtime: runtime_libs.RuntimeLibs) -> str:
    digest = hashlib.sha256(RUNNER_SOURCE.read_bytes())
    digest.update(f"\0{runtime.tag}\0{' '.join(RUNNER_FLAGS)}".encode())
    return digest.hexdigest()[:16]


def build_runner() -> Path:
    """Path of the aarch64 deploy runner, compiled on first use."""
    cxx = toolchain.find_cxx()
    runtime = runtime_libs.ensure_runtime()
    out = runtime_libs.cache_dir() / "aarch64-runner" / _runner_key(runtime) / "runner"
    if out.is_file() and os.access(out, os.X_OK):
        return out  # (a runner cached without its x bit, as 5be6211 left it, is rebuilt)
    # Compile to a private name and rename: concurrent builders each produce the same
    # file and the last rename wins, so no lock is needed.
    with atomic_path(out) as tmp:
        cmd = [
            str(cxx), *RUNNER_FLAGS, "-isystem", str(runtime.include_dir),
            str(RUNNER_SOURCE), "-o", str(tmp), "-L", str(runtime.lib_dir),
            # The runner calls only tvm_ffi, but libtvm_runtime must be loaded: it
            # registers the module loader and the VM that the exported library uses.
            "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
            detail = (errors or proc.stderr.splitlines() or ["no output"])[0]
            raise TargetError(f"building the aarch64 deploy runner failed: {detail}")
        os.chmod(tmp, 0o755)
    return out


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _check_input(index: int, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.name not in SUPPORTED_DTYPES:
        raise TargetError(
            f"input {index} has dtype {array.dtype.name}, which the arm-cpu runner does not "
            f"support (supported: {', '.join(sorted(SUPPORTED_DTYPES))})"
        )
    # The runner reads little-endian C-order data only. (Not np.ascontiguousarray: it
    # turns a 0-d array into a 1-d one.)
    return np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")


def run_module(
    lib_path: Path, inputs: list[np.ndarray], repeat: int = 1, *, warmup: int = 0
) -> tuple[list[np.ndarray], dict]:
    """Run ``main`` of an exported aarch64 module under qemu.

    ``warmup`` untimed calls come first (the first call also fills the VM's memory
    pool). Returns the flattened outputs and the runner's timing: ``repeat``,
    ``warmup``, ``mean_ms``, ``min_ms``, ``runs_ms``, ``num_outputs`` (wall time under
    emulation, not device time).
    """
    if repeat < 1 or warmup < 0:
        raise TargetError(f"need repeat >= 1 and warmup >= 0, got {repeat} and {warmup}")
    lib_path = Path(lib_path).resolve()
    if not lib_path.is_file():
        raise TargetError(f"module library {lib_path} not found")
    arrays = [_check_input(i, a) for i, a in enumerate(inputs)]
    qemu = toolchain.find_qemu()
    sysroot = toolchain.find_sysroot()
    runner = build_runner()
    runtime = runtime_libs.ensure_runtime()

    with tempfile.TemporaryDirectory(prefix="edgec-arm-") as work:
        work_dir = Path(work)
        args: list[str] = []
        for i, array in enumerate(arrays):
            in_path = work_dir / f"in_{i}.npy"
            np.save(in_path, array, allow_pickle=False)
            args += ["--in", str(in_path)]
        out_dir = work_dir / "out"
        out_dir.mkdir()
        cmd = [
            str(qemu), "-L", str(sysroot),
            # -E sets the variable for the emulated program only, not for qemu itself.
            "-E", f"LD_LIBRARY_PATH={runtime.lib_dir}",
            str(runner), str(lib_path), *args, "--out-dir", str(out_dir),
            "--repeat", str(repeat), "--warmup", str(warmup),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            detail = _last_line(proc.stderr) or f"exit code {proc.returncode}"
            raise TargetError(f"arm-cpu run of {lib_path.name} failed: {detail}")
        try:
            timing = json.loads(_last_line(proc.stdout))
        except json.JSONDecodeError as err:
            raise TargetError(f"arm-cpu runner printed no timing: {proc.stdout!r}") from err
        outputs = [
            np.load(out_dir / f"out_{i}.npy", allow_pickle=False)
            for i in range(timing["num_outputs"])
        ]
    return outputs, timing
