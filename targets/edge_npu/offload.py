"""The edge-npu phase of the build: partition -> lower -> calls to the simulator.

    offload(mod, config) -> Offload(mod, files, report)

``mod`` comes back with every NPU segment replaced by
``R.call_dps_packed("edgec.edge_npu.run", (key, segment, *inputs), out)`` and the
segment functions removed, so the rest is an ordinary CPU module for ``tvm.compile``.
``files`` (npu.json, npu.bin) go into the package beside model.so; ``report`` is the
placement report (``report.placement``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .bundle import model_key, to_files
from .config import NpuConfig, load_config
from .lower import LowerError, NpuModel, Segment, lower, signature
from .mapping import Mapping
from .partition import Partition, partition
from .report import placement
from .runtime import PACKED_FUNC
from .tuner import model_cycles
from .tvm_compat import var_name


@dataclass
class Offload:
    mod: Any
    files: dict[str, bytes]
    report: dict[str, Any]
    partition: Partition
    model: NpuModel


def offload(mod: Any, config: str | NpuConfig = "edge-npu",
            dataflow: dict[str, str] | None = None,
            mappings: dict[str, Mapping] | None = None) -> Offload:
    """Partition ``mod`` for the NPU, lower its segments, and call them from ``main``.

    ``mappings``: tuned layer mappings by ``workload_key`` (``tuner.load_mappings``)."""
    cfg = load_config(config) if isinstance(config, str) else config
    part, model = partition_and_lower(mod, cfg, dataflow, mappings)
    key = model_key(model)
    new_mod = replace_segments(part.mod, part.functions, key)
    return Offload(new_mod, to_files(model), placement(cfg, part, model), part, model)


MAX_FALLBACKS = 64
NO_MACS = ("in a segment without MACs (element-wise, max-pool, resize or concat layers "
           "only): sending its tensors over the link and back costs more than the CPU's work")


def partition_and_lower(mod: Any, cfg: NpuConfig, dataflow: dict[str, str] | None = None,
                        mappings: dict[str, Mapping] | None = None
                        ) -> tuple[Partition, NpuModel]:
    """Partition and lower; a layer the memory plan or the program generator cannot place
    is left on the CPU (with the reason, in the placement report) and the module is
    partitioned again, so no internal limit of the lowering reaches the user as an error."""
    deny: dict[Any, str] = {}
    for _ in range(MAX_FALLBACKS):
        part = partition(mod, cfg, deny)
        idle = [sl.layer for seg in part.segments if not any(sl.layer.macs for sl in seg.layers)
                for sl in seg.layers]
        if idle:  # no MACs: the link costs more than the CPU's work
            deny.update({signature(ly): NO_MACS for ly in idle})
            continue
        try:
            return part, lower_best(cfg, part.segments, dataflow, mappings)
        except LowerError as exc:
            keys = {signature(ly) for ly in exc.layers} - set(deny)
            if not keys:
                break
            deny.update({k: f"could not be placed on {cfg.name}: {exc}" for k in keys})
    # last resort: nothing on the NPU (every op runs on the CPU, each with a reason)
    part = partition(mod, cfg, _DenyAll(f"the NPU segments could not be placed on {cfg.name}"))
    return part, lower(cfg, part.segments, dataflow, mappings)


def lower_best(cfg: NpuConfig, segments: list[Segment], dataflow: dict[str, str] | None,
               mappings: dict[str, Mapping] | None) -> NpuModel:
    """``lower`` with the tuned ``mappings``, or with the defaults if that is faster: the
    tuner measures each layer alone, and the memory plan and cascades built around its
    mappings can make the whole slower (det 640 lost 0.6 % once)."""
    model = lower(cfg, segments, dataflow, mappings)
    if not mappings:
        return model
    try:
        default = lower(cfg, segments, dataflow, None)
    except LowerError:
        return model
    return model if model_cycles(cfg, model) <= model_cycles(cfg, default) else default


class _DenyAll(dict):  # type: ignore[type-arg]
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def get(self, key: Any, default: Any = None) -> Any:
        return self.reason

    def __bool__(self) -> bool:  # empty, yet it denies everything (``deny or {}``)
        return True


def replace_segments(mod: Any, names: list[str], key: int) -> Any:
    """Calls to segment functions -> ``call_dps_packed`` of the simulator; drop them."""
    from tvm import ir, relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    index = {n: i for i, n in enumerate(names)}

    @mutator
    class _Replace(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            new = super().visit_call_(call)
            if isinstance(new.op, ir.GlobalVar) and var_name(new.op) in index:
                ret = mod[new.op].ret_ty if hasattr(mod[new.op], "ret_ty") else \
                    mod[new.op].ret_struct_info
                outs = list(ret.fields) if hasattr(ret, "fields") else ret
                args = [relax.prim_value(key), relax.prim_value(index[var_name(new.op)]),
                        *new.args]
                return relax.call_dps_packed(relax.ExternFunc(PACKED_FUNC),
                                             relax.Tuple(args), outs)
            return new

    out = ir.IRModule({gv: f for gv, f in mod.functions.items() if var_name(gv) not in index},
                      attrs=mod.attrs)
    out["main"] = _Replace(out).visit_expr(mod["main"])
    return out
