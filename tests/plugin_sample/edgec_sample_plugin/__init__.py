"""A sample edgec pass plugin: ``drop-dropout``.

edgec imports this module through the ``edgec.passes`` entry-point group; importing
it registers the pass (off by default; ``edgec build --pass drop-dropout``).

Before: ``t = R.nn.dropout(x, rate); y = t[0]``  After: ``y = x``
(inference: dropout is the identity on its first output).
"""

from __future__ import annotations

from typing import Any

import tvm
from edgec.passes import register_pass
from tvm import relax
from tvm.relax.dpl import is_op, is_tuple_get_item, wildcard

_x = wildcard()
_DROPOUT = is_tuple_get_item(is_op("relax.nn.dropout")(_x), 0)


@register_pass("drop-dropout", "optimize", origin="plugin:edgec-sample-plugin")
def drop_dropout(mod: tvm.IRModule, ctx: Any) -> tvm.IRModule:
    """Replace inference-time dropout with its input."""
    count = 0

    def rewrite(expr: relax.Expr, m: dict[Any, relax.Expr]) -> relax.Expr:
        nonlocal count
        count += 1
        return m[_x]

    out = mod.clone()
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            out[gv] = relax.analysis.remove_all_unused(
                relax.dpl.rewrite_call(_DROPOUT, rewrite, func))
    ctx.report["drop-dropout"] = {"fired": {"dropout(x)[0] -> x": count}, "skipped": {}}
    return out
