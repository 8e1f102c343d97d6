"""The build machine's own CPU, with its real ``mcpu`` so LLVM uses its vector units."""

from __future__ import annotations

import functools
import os

from edgec.targets.base import TargetDesc


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. ``znver4``)."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def host_target() -> TargetDesc:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = host_cpu()
    return TargetDesc(
        name="host",
        family="host",
        # Without mcpu LLVM emits baseline x86-64 (no AVX).
        tvm={"kind": "llvm", "mcpu": cpu, "num-cores": int(cores or 1)},
        runner="host",
        description=f"this machine's CPU ({cpu}, {cores} cores)",
    )
