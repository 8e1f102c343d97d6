"""Partition a QDQ Relax module into NPU segments and CPU ops.

    prepare        each dequantize of an activation gets one consumer (a dequantize
                   read by two layers would otherwise tie them into one match or none)
    FuseOpsByPattern(patterns.fusion_patterns)   one composite function per NPU layer
    MergeCompositeFunctions                      adjacent layers -> one NPU segment
                                                 (Codegen="edge_npu"); several allowed
    segments       each segment function -> ``lower.Segment`` (layers via ``describe``)
    cpu_ops        every op left in ``main`` with the reason it is not on the NPU

Ops left on the CPU run as usual through TVM's host build; the NPU segments are
replaced by calls to the simulator (``offload.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgec.errors import EdgecError

from .config import NpuConfig
from .layers import describe, hwc
from .lower import SegLayer, Segment
from .patterns import PREFIX, TABLE, Rejections, fusion_patterns
from .tvm_compat import constant_type, shape_of, var_name


@dataclass
class Partition:
    mod: Any  # IRModule with Codegen="edge_npu" functions called from main
    segments: list[Segment]
    cpu_ops: list[dict[str, str]] = field(default_factory=list)  # {"var", "op", "reason"}
    functions: list[str] = field(default_factory=list)  # segment i's function in ``mod``


def prepare(mod: Any) -> Any:
    """Give every ``dequantize`` binding exactly one consumer (duplicate per use)."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Dup(PyExprMutator):  # type: ignore[misc]
        def __init__(self, module: Any) -> None:
            super().__init__(module)
            self.dq: dict[Any, Any] = {}
            self.seen: set[Any] = set()

        def visit_var_binding_(self, binding: Any) -> None:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == \
                    "relax.dequantize":
                self.dq[binding.var] = value
            super().visit_var_binding_(binding)

        def visit_call_(self, call: Any) -> Any:
            new = super().visit_call_(call)
            args, changed = [], False
            for a in new.args:
                if isinstance(a, relax.Var) and a in self.dq:
                    if a in self.seen:  # second and later uses get their own copy
                        dq = self.dq[a]
                        a = self.builder_.emit(relax.Call(dq.op, [self.visit_expr(x)
                                                                  for x in dq.args],
                                                          dq.attrs), var_name(a) + "_dup")
                        changed = True
                    else:
                        self.seen.add(a)
                args.append(a)
            if not changed:
                return new
            return relax.Call(new.op, args, new.attrs, new.ty_args, new.span)

    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = _Dup(mod).visit_expr(func)
    return relax.transform.DeadCodeElimination()(mod)


def partition(mod: Any, cfg: NpuConfig) -> Partition:
    """Fuse NPU layers, merge them into segments, and explain what stays on the CPU."""
    from tvm import relax

    rejections = Rejections()
    mod = prepare(mod)
    mod = relax.transform.FuseOpsByPattern(fusion_patterns(cfg, rejections),
                                           bind_constants=True)(mod)
    mod = relax.transform.MergeCompositeFunctions()(mod)
    order = _call_order(mod)
    funcs = sorted(((var_name(gv), func) for gv, func in mod.functions.items()
                    if isinstance(func, relax.Function) and
                    (func.attrs or {}).get("Codegen") == PREFIX),
                   key=lambda item: order.get(item[0], 0))
    # short names for reports; ``functions`` keeps the IRModule's (long, fused) names
    segments = [_segment(f"npu{i}", func) for i, (_, func) in enumerate(funcs)]
    return Partition(mod, segments, cpu_ops(mod, rejections), [n for n, _ in funcs])


def _call_order(mod: Any) -> dict[str, int]:
    from tvm import relax

    order: dict[str, int] = {}
    for i, b in enumerate(_bindings(mod["main"])):
        v = b.value
        if isinstance(v, relax.Call) and isinstance(v.op, relax.GlobalVar):
            order.setdefault(var_name(v.op), i)
    return order


def _bindings(func: Any) -> list[Any]:
    return [b for blk in func.body.blocks for b in blk.bindings]


def _segment(name: str, func: Any) -> Segment:
    """A merged Codegen function -> Segment of layers (composite calls in order)."""
    from tvm import relax

    local: dict[Any, Any] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    tensors: dict[str, Any] = {}
    layers: list[SegLayer] = []
    names: dict[Any, str] = {}

    def vname(v: Any) -> str:
        if v not in names:
            names[v] = f"{var_name(v)}#{len(names)}"  # unique even if hints repeat
        return names[v]

    inputs = [vname(p) for p in func.params]
    for p in func.params:
        shapes[vname(p)] = shape_of(p)
    tuple_out: dict[Any, list[Any]] = {}
    for b in _bindings(func):
        v = b.value
        if isinstance(v, relax.Function):
            local[b.var] = v
            continue
        if isinstance(v, relax.Tuple):
            tuple_out[b.var] = list(v.fields)
            continue
        if not (isinstance(v, relax.Call) and v.op in local):
            raise EdgecError(f"segment {name}: unexpected binding {var_name(b.var)}")
        comp = local[v.op]
        inner = {cb.var: cb.value for cb in _bindings(comp)}
        got = describe(comp.body.body, inner.get)
        if isinstance(got, str):
            raise EdgecError(f"segment {name}: layer {var_name(b.var)}: {got}")
        layer, ins = got
        arg_of = {p: a for p, a in zip(comp.params, v.args)}
        in_names = [vname(arg_of[x]) for x in ins]
        for x, t in zip(ins, layer.inputs):
            tensors.setdefault(vname(arg_of[x]), t)
        out = vname(b.var)
        shapes[out] = shape_of(b.var)
        tensors[out] = layer.out
        # FuseOpsByPattern renames the vars; name layers by segment, position and kind
        layers.append(SegLayer(f"{name}/{len(layers):03d}.{layer.kind}", layer, in_names, out))
    body = func.body.body
    outs = tuple_out.get(body, [body]) if isinstance(body, relax.Var) else list(body.fields)
    return Segment(name, inputs, [vname(o) for o in outs], layers, shapes, tensors)


def cpu_ops(mod: Any, rejections: Rejections) -> list[dict[str, str]]:
    """Ops left in ``main`` (not in an NPU segment), each with why."""
    from tvm import relax

    out = []
    npu_ops = {op for row in TABLE["layers"].values() for op in row["ops"]}
    for b in _bindings(mod["main"]):
        v = b.value
        if not isinstance(v, relax.Call) or isinstance(v.op, relax.GlobalVar):
            continue
        op = getattr(v.op, "name", str(v.op))
        var = var_name(b.var)
        reason = rejections.by_var.get(var) or TABLE["cpu_reasons"].get(op)
        if op in ("relax.quantize", "relax.dequantize") and var in rejections.by_var:
            reason = rejections.by_var[var]
        elif op == "relax.dequantize" and _const_arg(v):
            reason = "dequantizes a constant for a CPU op"
        if reason is None:
            reason = ("supported op, but not between int8 tensors (no quantize/dequantize "
                      "around it)" if op in npu_ops else "not in the edge-npu op table")
        out.append({"var": var, "op": op, "reason": reason})
    return out


def _const_arg(call: Any) -> bool:
    return isinstance(call.args[0], constant_type())


__all__ = ["Partition", "cpu_ops", "hwc", "partition", "prepare"]
