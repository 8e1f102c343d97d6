"""The few TVM names edge-npu uses that moved between releases (one place to update)."""

from __future__ import annotations

from typing import Any


def constant_type() -> type:
    """Relax constants: ``tvm.ir.expr.Constant`` in 0.27, ``relax.Constant`` before."""
    import tvm

    const = getattr(getattr(tvm.ir, "expr", None), "Constant", None)
    if const is None:
        from tvm import relax

        const = relax.Constant
    return const


def var_name(v: Any) -> str:
    """A Relax var's name: ``.name`` in 0.27, ``.name_hint`` before."""
    return str(getattr(v, "name", None) or v.name_hint)


def shape_of(e: Any) -> tuple[int, ...]:
    """Static shape of a Relax expr: ``.ty`` in 0.27, ``.struct_info`` before."""
    info = e.ty if hasattr(e, "ty") else e.struct_info
    return tuple(int(d) for d in info.shape)


def dtype_of(e: Any) -> str:
    info = e.ty if hasattr(e, "ty") else e.struct_info
    return str(info.dtype)


def constant_array(c: Any) -> Any:
    """The numpy value of a Relax constant: ``.value`` in 0.27, ``.data`` before."""
    data = c.value if hasattr(c, "value") and hasattr(c.value, "numpy") else c.data
    return data.numpy()
