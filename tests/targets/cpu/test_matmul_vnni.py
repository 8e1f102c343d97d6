"""int8 dense layers on AVX512-VNNI: uint8 activations, vpdpbusd, bit-exact.

``UnsignedInt8Matmul`` shifts the activation to uint8 and compensates with a constant;
``MatmulVNNI`` tensorizes the matmul with ``vpdpbusd``. The integer result must be
identical to the reference (no rounding anywhere), the instruction must be in the
code built for a VNNI CPU, and other targets must keep the generic int8 kernel.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from edgec.passes.quantize import requant
from edgec.passes.quantize.lower import binary32_te
from edgec.targets import get_target
from edgec.targets.base import TargetDesc
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.apply import ApplyCPUSchedules
from edgec.targets.cpu.int8_unsigned import UnsignedInt8Matmul
from edgec.targets.cpu.vnni import has_vnni
from tvm import relax
from tvm.relax import op as R
from tvm.target import Target

HOST = get_target("host")
VNNI_CPU = Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
NO_VNNI_CPU = Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
ZP_Y = -5


def _model(m: int, k: int, n: int, seed: int = 0) -> tuple[tvm.IRModule, dict]:
    """int8 x [1, m, k] @ W[k, n] + bias -> binary32 requantization -> int8, twice from one x."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    w2 = rng.integers(-128, 128, (k, n)).astype(np.int8)
    b = rng.integers(-3000, 3000, (n,)).astype(np.int32)
    mult, shift = requant.binary32_multiplier(rng.uniform(2e-4, 2e-3, n).astype(np.float32))
    x = relax.Var("x", relax.TensorType((1, m, k), "int8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            outs = []
            for weight in (w, w2):  # two readers of x, as Q and K projections are
                acc = bb.emit(R.add(R.matmul(x, relax.const(weight), out_dtype="int32"),
                                    relax.const(b)))
                outs.append(bb.call_te(binary32_te, acc, relax.const(mult), relax.const(shift),
                                       ZP_Y, -128, 127, 2, primfunc_name_hint="requantize_binary32"))
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    return bb.get(), {"w": (w, w2), "b": b, "m": mult, "t": shift}


def _reference(xq: np.ndarray, p: dict) -> list[np.ndarray]:
    outs = []
    for w in p["w"]:
        acc = (xq[0].astype(np.int64) @ w.astype(np.int64) + p["b"]).astype(np.int32)
        outs.append(requant.requantize_binary32(acc, p["m"], p["t"], ZP_Y)[None])
    return outs


def _build(mod: tvm.IRModule) -> tuple[tvm.runtime.Executable, ApplyCPUSchedules]:
    defaults = ApplyCPUSchedules()
    ex = tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST, defaults=defaults))
    return ex, defaults


def _run(ex: tvm.runtime.Executable, xq: np.ndarray) -> list[np.ndarray]:
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return [o.numpy() for o in vm["main"](tvm.runtime.tensor(xq))]


@pytest.mark.parametrize("m,k,n", [(128, 384, 64), (7, 32, 48)])
def test_vnni_matmul_is_bit_exact(m: int, k: int, n: int) -> None:
    if not has_vnni(HOST.tvm_target()):
        pytest.skip("this machine's CPU has no AVX512-VNNI: the kernel cannot run here")
    mod, p = _model(m, k, n)
    ex, defaults = _build(mod)
    # Both layers call one kernel: the weights are its parameters.
    assert defaults.fired["MatmulVNNI"] == 1, dict(defaults.fired)
    # Extremes included: -128 becomes 0 and 127 becomes 255 after the shift.
    xq = np.random.default_rng(1).integers(-128, 128, (1, m, k)).astype(np.int8)
    xq[0, 0, :] = -128
    xq[0, -1, :] = 127
    for got, want in zip(_run(ex, xq), _reference(xq, p)):
        np.testing.assert_array_equal(got, want)


def test_shapes_off_the_vector_keep_the_generic_kernel() -> None:
    mod, p = _model(5, 30, 20)  # K % 4 and N % 16 both nonzero
    ex, defaults = _build(mod)
    assert defaults.fired["MatmulVNNI"] == 0 and defaults.fired["Matmul"] == 1, dict(defaults.fired)
    xq = np.random.default_rng(2).integers(-128, 128, (1, 5, 30)).astype(np.int8)
    for got, want in zip(_run(ex, xq), _reference(xq, p)):
        np.testing.assert_array_equal(got, want)


def test_rewrite_only_on_vnni_targets_and_shift_shared() -> None:
    mod, _ = _model(16, 64, 32)
    for target, fired in ((VNNI_CPU, 2), (NO_VNNI_CPU, 0)):
        rewrite = UnsignedInt8Matmul()
        with target:
            out = rewrite(mod)
        assert rewrite.fired == fired
        text = out.script()
        # One uint8 copy of x serves both matmuls.
        assert len(re.findall(r'R\.astype\([^)]*"uint8"\)', text)) == (1 if fired else 0), text


def test_vpdpbusd_in_code_built_for_a_vnni_cpu(tmp_path: Path) -> None:
    mod, _ = _model(32, 128, 64)
    defaults = ApplyCPUSchedules()
    desc = TargetDesc("cascadelake", "host", dict(VNNI_CPU.export()), "none")
    ex = tvm.compile(mod, VNNI_CPU, relax_pipeline=cpu_pipeline(desc, defaults=defaults))
    assert defaults.fired["MatmulVNNI"] == 1, dict(defaults.fired)
    lib = tmp_path / "vnni.so"
    ex.export_library(str(lib))
    asm = subprocess.run(["objdump", "-d", str(lib)], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert "vpdpbusd" in asm

