"""`edgec tune` extracts the kernels `edgec build` schedules (graph rewrites included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from edgec.targets import get_target
from edgec.tuning import relax_kernels
from onnx import TensorProto, helper, numpy_helper
from tvm import tirx


def test_tuning_tasks_see_the_upsampling_rewrite(tmp_path: Path) -> None:
    """An upsampling ConvTranspose is a 1x1 conv + depth-to-space in build, so tuning
    must see that form too; otherwise its records never match a built kernel."""
    w = numpy_helper.from_array(np.ones((8, 4, 2, 2), np.float32), "w")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])
    graph = helper.make_graph([node], "up", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 6, 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 12, 12])], [w])
    path = tmp_path / "up.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)

    mod = relax_kernels(path, get_target("host"), None)
    kernels = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)]
    assert kernels
    assert not [k for k in kernels if "transpose" in k and "conv" in k], kernels
    assert [k for k in kernels if "conv2d" in k], kernels
