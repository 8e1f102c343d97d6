"""The edge-npu compilation target: the NPU config plus the host CPU for the rest."""

from __future__ import annotations

from edgec.targets.base import TargetDesc

from .config import load_config


def npu_target(config_name: str = "edge-npu") -> TargetDesc:
    """``edge-npu[:<config>]``: NPU segments for ``config_name``, CPU parts for this host.

    The CPU parts (input quantize, ops the NPU lacks) are built for the machine that
    runs the simulator; ``features`` names the NPU config the package's program is for.
    """
    from edgec.targets.host import host_target

    cfg = load_config(config_name)
    host = host_target()
    return TargetDesc(
        name="edge-npu" if config_name == "edge-npu" else f"edge-npu:{config_name}",
        family="edge-npu",
        tvm=dict(host.tvm),
        runner="npu-sim",
        description=(f"{cfg.name}: {cfg.rows}x{cfg.cols} int8 @ {cfg.clock_mhz:.0f} MHz "
                     f"({cfg.peak_tops:.1f} TOPS), {cfg.link.name} link; CPU parts on "
                     f"{host.description}"),
        # offload-qdq: the target lowers QDQ conv/matmul itself, so the driver keeps the
        # quantized model in QDQ form instead of running the CPU int8 kernels pass.
        features=(f"npu-config={cfg.name}", "offload-qdq"),
    )


def config_of(desc: TargetDesc) -> str:
    """The NPU config name a target description was made for."""
    for f in desc.features:
        if f.startswith("npu-config="):
            return f.split("=", 1)[1]
    return "edge-npu"
