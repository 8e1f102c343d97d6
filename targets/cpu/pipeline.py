"""The Relax pipeline for CPU targets: TVM's cpu_generic phases plus schedules.

    graph rewrites (fast math) -> dispatch -> legalize + fuse
             -> [tuned schedules from the database]
             -> default schedules (this package's rules, weight packing) -> lower to the VM

Use as ``tvm.compile(mod, target, relax_pipeline=cpu_pipeline(desc))``.
"""

from __future__ import annotations

from pathlib import Path

import tvm
from edgec.targets.base import TargetDesc
from edgec.targets.cpu.apply import ApplyCPUSchedules
from edgec.targets.cpu.conv_pointwise import FlattenPointwiseConv
from edgec.targets.cpu.conv_transpose import UpsampleConvTranspose
from edgec.targets.cpu.fast_math import FastMath
from edgec.targets.cpu.int8_unsigned import UnsignedInt8Matmul
from edgec.targets.cpu.pack import FoldPackedWeights
from edgec.targets.cpu.pad_into_conv import FoldPadIntoConv
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic


def graph_passes() -> list[tvm.transform.Pass]:
    """Relax rewrites into forms the default schedules run faster (before legalize)."""
    # UnsignedInt8Matmul before FlattenPointwiseConv: it takes the int8 1x1 convs itself;
    # and before FoldPadIntoConv: the convs it packs pad in their packing kernel.
    return [UpsampleConvTranspose(), UnsignedInt8Matmul(), FoldPadIntoConv(),
            FlattenPointwiseConv(), FastMath()]


def kernel_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """Relax -> fused TIR kernels: the kernels the schedules (tuned or default) see.

    ``edgec tune`` extracts its tasks with these same passes, so its records match the
    kernels ``build`` looks up.
    """
    return (graph_passes() + cpu_generic.library_dispatch_passes(target)
            + cpu_generic.legalize_passes(target))


def schedule_passes(
    tuning_db: Path | None, defaults: ApplyCPUSchedules | None = None
) -> list[tvm.transform.Pass]:
    """Tuned kernels first (they get ``tirx.is_scheduled``), then defaults for the rest.

    The defaults may pre-pack constant weights (``pack``): the kernels learn which
    parameters are constants from ``AttachAttrLayoutFreeBuffers``, and the packing
    copies they emit are split out and folded into new constants at build time.
    """
    passes: list[tvm.transform.Pass] = []
    if tuning_db is not None and Path(tuning_db).is_dir():
        passes.append(relax.transform.MetaScheduleApplyDatabase(str(tuning_db)))
    passes.append(relax.transform.AttachAttrLayoutFreeBuffers())
    passes.append(defaults if defaults is not None else ApplyCPUSchedules())
    passes.append(FoldPackedWeights())
    return passes


def cpu_pipeline(
    desc: TargetDesc,
    tuning_db: Path | None = None,
    *,
    defaults: ApplyCPUSchedules | None = None,
) -> tvm.transform.Pass:
    """The whole Relax -> VM pipeline for ``desc``, applying ``tuning_db`` if given.

    ``defaults`` is the default-schedule pass to use; pass your own instance to read
    afterwards which rule scheduled how many kernels (``defaults.fired``).
    """
    target = desc.tvm_target()

    @tvm.transform.module_pass(opt_level=0, name="edgec.cpu_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                kernel_passes(target)
                + schedule_passes(tuning_db, defaults)
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline
