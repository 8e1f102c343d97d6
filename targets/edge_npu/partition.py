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
from .tvm_compat import constant_array, constant_type, shape_of, var_name

FLOAT_REASON = "supported op, but not between int8 tensors"


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

    mod = normalize_clip(mod)
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = _Dup(mod).visit_expr(func)
    return relax.transform.DeadCodeElimination()(mod)


def _const_eval(e: Any, bound: dict[Any, Any]) -> Any:
    """The numpy value of a small expression of constants (``where(isnan(c), inf, c)``,
    what the ONNX importer writes for a Clip bound), else None."""
    import numpy as np
    from tvm import relax

    for _ in range(8):
        if isinstance(e, relax.Var) and e in bound:
            e = bound[e]
        else:
            break
    if isinstance(e, constant_type()):
        return constant_array(e)
    if isinstance(e, relax.Call) and getattr(e.op, "name", "") in ("relax.isnan", "relax.where"):
        args = [_const_eval(a, bound) for a in e.args]
        if any(a is None for a in args):
            return None
        return np.isnan(args[0]) if e.op.name == "relax.isnan" else np.where(*args)
    return None


def normalize_clip(mod: Any) -> Any:
    """ONNX Clip with bound inputs imports as ``call_tir(maximum, (x, lo))`` and
    ``call_tir(minimum, (.., hi))`` on TE functions; make them ``R.clip`` (a pair) or
    ``R.maximum`` / ``R.minimum`` with a scalar constant, which the patterns see."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    call_tir = tvm.ir.Op.get("relax.call_tir")
    main = mod["main"]
    bound = {b.var: b.value for blk in main.body.blocks for b in blk.bindings}
    uses: dict[Any, int] = {}
    for v in bound.values():
        if isinstance(v, relax.Call):
            for a in v.args:
                for x in (a.fields if isinstance(a, relax.Tuple) else [a]):
                    if isinstance(x, relax.Var):
                        uses[x] = uses.get(x, 0) + 1

    def minmax(call: Any) -> tuple[str, Any, float, str] | None:
        if not (isinstance(call, relax.Call) and call.op.same_as(call_tir)):
            return None
        gv = call.args[0]
        if not isinstance(gv, relax.GlobalVar) or type(mod[gv]).__name__ != "PrimFunc":
            return None
        name = var_name(gv).rstrip("0123456789_")
        args = call.args[1]
        if name not in ("maximum", "minimum") or not isinstance(args, relax.Tuple) or \
                len(args.fields) != 2:
            return None
        x, c = args.fields
        value = _const_eval(c, bound)
        if value is None or np.asarray(value).size != 1 or shape_of(x) != shape_of(call):
            return None
        return name, x, float(np.asarray(value).reshape(-1)[0]), str(value.dtype)

    @mutator
    class _Clip(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            got = minmax(call)
            if got is None:
                return super().visit_call_(call)
            name, x, c, dtype = got
            if name == "minimum" and isinstance(x, relax.Var) and uses.get(x) == 1:
                inner = minmax(bound.get(x))
                if inner is not None and inner[0] == "maximum" and inner[2] <= c:
                    return relax.op.clip(self.visit_expr(inner[1]), relax.prim_value(inner[2]),
                                         relax.prim_value(c))
            op = relax.op.maximum if name == "maximum" else relax.op.minimum
            return op(self.visit_expr(x), relax.const(c, dtype))

    mod["main"] = _Clip(mod).visit_expr(main)
    return mod


def partition(mod: Any, cfg: NpuConfig, deny: dict[Any, str] | None = None) -> Partition:
    """Fuse NPU layers, merge them into segments, and explain what stays on the CPU.

    ``deny`` (layer signature -> reason) refuses layers a previous lowering could not
    place; they stay on the CPU with that reason."""
    from tvm import relax

    rejections = Rejections()
    mod = prepare(mod)
    mod = relax.transform.FuseOpsByPattern(fusion_patterns(cfg, rejections, deny),
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
            reason = (f"{FLOAT_REASON} (no quantize/dequantize around it)" if op in npu_ops
                      else "not in the edge-npu op table")
        out.append({"var": var, "op": op, "reason": reason})
    return out


def _const_arg(call: Any) -> bool:
    return isinstance(call.args[0], constant_type())


__all__ = ["Partition", "cpu_ops", "hwc", "partition", "prepare"]
