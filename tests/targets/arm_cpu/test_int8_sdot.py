"""The int8 kernels edgec's quantize-int8 pass emits use the dot-product instructions
on cortex-a55 (+dotprod): sdot appears in the exported library's disassembly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import tvm
from edgec import frontend
from edgec.passes.quantize.lower import quantize_int8
from edgec.passes.registry import PassContext
from edgec.targets.arm_cpu import arm_target, toolchain
from edgec.targets.arm_cpu.deploy import export_library

from tests.passes.quantize._models import matmul_model, quantized


def test_int8_matmul_uses_sdot_on_cortex_a55(tmp_path: Path) -> None:
    # Missing tools fail the test with the install hint: `make test` installs them.
    objdump = toolchain.find_objdump()
    toolchain.find_cxx()
    _, _, _, q = quantized(matmul_model())
    ctx = PassContext(target=None)
    mod = quantize_int8(frontend.to_relax(q), ctx)
    assert ctx.report["quantize-int8"]["lowered"] == {"matmul": 1}
    ex = tvm.compile(mod, target=arm_target("cortex-a55").tvm_target())
    lib = tmp_path / "int8.so"
    export_library(ex, lib)
    asm = subprocess.run([str(objdump), "-d", str(lib)], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert "sdot" in asm
