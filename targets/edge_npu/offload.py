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
from .lower import NpuModel, lower
from .partition import Partition, partition
from .report import placement
from .runtime import PACKED_FUNC
from .tvm_compat import var_name


@dataclass
class Offload:
    mod: Any
    files: dict[str, bytes]
    report: dict[str, Any]
    partition: Partition
    model: NpuModel


def offload(mod: Any, config: str | NpuConfig = "edge-npu",
            dataflow: dict[str, str] | None = None) -> Offload:
    """Partition ``mod`` for the NPU, lower its segments, and call them from ``main``."""
    cfg = load_config(config) if isinstance(config, str) else config
    part = partition(mod, cfg)
    model = lower(cfg, part.segments, dataflow)
    key = model_key(model)
    new_mod = replace_segments(part.mod, part.functions, key)
    return Offload(new_mod, to_files(model), placement(cfg, part, model), part, model)


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
