"""Compile an in-memory ONNX model for the host and run it in this process.

The same steps as ``edgec.driver.build`` (``frontend.prepare``, import, default passes,
``tvm.compile``) without writing a package or exporting a shared library. Used by the ONNX backend (``edgec.onnx_backend``), the conformance
script and the differential fuzzer, which compile thousands of tiny models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from edgec import converters, frontend
from edgec.errors import EdgecError, ModelError
from edgec.expand_functions import expand_functions
from edgec.frontend import TensorSpec


@dataclass
class Compiled:
    """A model compiled for the host and loaded on TVM's Relax VM."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    nodes: int  # nodes left after simplification (0: the optimizer folded everything)
    _vm: Any
    _dev: Any

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run ``main`` on arrays in the model's input order; outputs in graph order."""
        import tvm
        from edgec.targets.host.runtime import flatten_outputs

        # np.ascontiguousarray would turn a 0-d array into 1-d; asarray keeps the rank.
        args = [tvm.runtime.tensor(np.asarray(a, order="C"), self._dev) for a in arrays]
        return flatten_outputs(self._vm["main"](*args))


def compile_proto(
    proto: onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    *,
    passes: list[str] | None = None,
) -> Compiled:
    """ONNX ModelProto -> host executable, raising ``EdgecError`` on any user-caused failure."""
    import tvm
    from edgec.driver import compile_relax
    from edgec.pass_runner import run_passes
    from edgec.passes.registry import PassContext, resolve
    from edgec.targets import get_target
    from tvm import relax

    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelError(f"ONNX checker rejected the model: {frontend._first_line(exc)}") from None
    desc = get_target("host")
    fixed, simple = frontend.prepare(proto, input_shapes)
    mod = frontend.to_relax(simple)
    mod, _, _ = run_passes(mod, resolve(passes, None), PassContext(target=desc))
    executable = compile_relax(mod, desc)
    dev = tvm.cpu()
    return Compiled(
        inputs=frontend.graph_inputs(fixed),
        outputs=frontend.graph_outputs(simple),
        nodes=len(simple.graph.node),
        _vm=relax.VirtualMachine(executable, dev),
        _dev=dev,
    )
