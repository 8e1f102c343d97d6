"""End-to-end arm-cpu deploy: build for aarch64, run under qemu, compare with numpy."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tvm
from edgec.errors import TargetError
from edgec.targets.arm_cpu import deploy, runtime_libs, toolchain
from tvm import relax

Build = Callable[[tvm.IRModule, str], Path]


def _var(name: str, shape: tuple[int, ...], dtype: str) -> relax.Var:
    return relax.Var(name, relax.TensorType(shape, dtype))


def _function(params: list[relax.Var], body: Callable[[relax.BlockBuilder], relax.Expr]):
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb))
        bb.emit_func_output(out)
    return bb.get()


def matmul_add_relu() -> tvm.IRModule:
    x, w, b = (
        _var("x", (4, 16), "float32"),
        _var("w", (16, 8), "float32"),
        _var("b", (8,), "float32"),
    )

    def body(bb: relax.BlockBuilder) -> relax.Expr:
        y = bb.emit(relax.op.matmul(x, w))
        return relax.op.nn.relu(bb.emit(relax.op.add(y, b)))

    return _function([x, w, b], body)


def conv2d() -> tvm.IRModule:
    x, w = _var("x", (1, 3, 12, 12), "float32"), _var("w", (8, 3, 3, 3), "float32")
    return _function([x, w], lambda bb: relax.op.nn.conv2d(x, w, strides=2, padding=1))


def int8_matmul() -> tvm.IRModule:
    x, w = _var("x", (8, 64), "int8"), _var("w", (64, 16), "int8")
    return _function([x, w], lambda bb: relax.op.matmul(x, w, out_dtype="int32"))


ROUNDTRIP_DTYPES = [
    "float32",
    "float64",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
]


def nested_identity() -> tvm.IRModule:
    """main returns its inputs as the nested tuple (p0, (p1, (p2, ...)), ...)."""
    params = [_var(f"p{i}", (2, 3) if i % 2 else (5,), d) for i, d in enumerate(ROUNDTRIP_DTYPES)]
    scalar = _var("s", (), "float32")

    def body(bb: relax.BlockBuilder) -> relax.Expr:
        inner = relax.Tuple([params[-1], scalar])
        for p in reversed(params[1:-1]):
            inner = relax.Tuple([p, inner])
        return relax.Tuple([params[0], inner])

    return _function([*params, scalar], body)


def random_inputs(mod: tvm.IRModule, rng: np.random.Generator) -> list[np.ndarray]:
    arrays = []
    for param in mod["main"].params:
        shape = [int(d) for d in param.ty.shape]
        dtype = str(param.ty.dtype)  # a PrimType in TVM 0.27, printing as "float32"
        if dtype == "bool":
            arrays.append(rng.random(shape) < 0.5)
        elif dtype.startswith(("int", "uint")):
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def run_on_host(mod: tvm.IRModule, inputs: list[np.ndarray]) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()


@pytest.mark.qemu
@pytest.mark.parametrize("cpu", ["cortex-a72", "cortex-a55"])
def test_matmul_add_relu_matches_numpy(arm_build: Build, cpu: str) -> None:
    mod = matmul_add_relu()
    x, w, b = inputs = random_inputs(mod, np.random.default_rng(0))
    outputs, _ = deploy.run_module(arm_build(mod, cpu), inputs)
    assert len(outputs) == 1
    np.testing.assert_allclose(outputs[0], np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-5)
    assert (outputs[0] == 0).any() and (outputs[0] > 0).any()  # relu did something


@pytest.mark.qemu
def test_conv2d_matches_host_vm(arm_build: Build) -> None:
    mod = conv2d()
    inputs = random_inputs(mod, np.random.default_rng(1))
    outputs, _ = deploy.run_module(arm_build(mod, "cortex-a72"), inputs)
    expected = run_on_host(mod, inputs)
    assert outputs[0].shape == expected.shape == (1, 8, 6, 6)
    np.testing.assert_allclose(outputs[0], expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def int8_libs(arm_build: Build) -> dict[str, Path]:
    mod = int8_matmul()
    return {cpu: arm_build(mod, cpu) for cpu in ("cortex-a72", "cortex-a55")}


@pytest.mark.qemu
@pytest.mark.parametrize("cpu", ["cortex-a72", "cortex-a55"])
def test_int8_matmul_is_exact(int8_libs: dict[str, Path], cpu: str) -> None:
    x, w = random_inputs(int8_matmul(), np.random.default_rng(2))
    outputs, _ = deploy.run_module(int8_libs[cpu], [x, w])
    assert outputs[0].dtype == np.int32
    np.testing.assert_array_equal(outputs[0], x.astype(np.int32) @ w.astype(np.int32))


def _has_sdot(lib: Path) -> bool:
    objdump = toolchain.find_objdump()
    text = subprocess.run(
        [str(objdump), "-d", str(lib)], capture_output=True, text=True, check=True
    ).stdout
    return any(line.split("\t")[2:3] == ["sdot"] for line in text.splitlines())


def test_dotprod_only_on_cortex_a55(int8_libs: dict[str, Path]) -> None:
    assert _has_sdot(int8_libs["cortex-a55"])
    assert not _has_sdot(int8_libs["cortex-a72"])


@pytest.mark.qemu
def test_nested_tuple_outputs_and_all_dtypes_round_trip(arm_build: Build) -> None:
    mod = nested_identity()
    inputs = random_inputs(mod, np.random.default_rng(3))
    outputs, timing = deploy.run_module(arm_build(mod, "cortex-a72"), inputs)
    assert timing["num_outputs"] == len(inputs)
    assert [o.dtype for o in outputs] == [a.dtype for a in inputs]
    for got, want in zip(outputs, inputs):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.qemu
def test_repeat_and_warmup_are_reported(arm_build: Build) -> None:
    mod = matmul_add_relu()
    inputs = random_inputs(mod, np.random.default_rng(4))
    _, timing = deploy.run_module(arm_build(mod, "cortex-a72"), inputs, repeat=3, warmup=2)
    assert timing["repeat"] == 3 and timing["warmup"] == 2 and len(timing["runs_ms"]) == 3
    assert 0 < timing["min_ms"] <= timing["mean_ms"]
    assert timing["min_ms"] == pytest.approx(min(timing["runs_ms"]), rel=1e-6)
    assert timing["mean_ms"] == pytest.approx(sum(timing["runs_ms"]) / 3, rel=1e-5)


@pytest.mark.qemu
def test_runner_failure_is_one_line_target_error(arm_build: Build) -> None:
    mod = matmul_add_relu()
    x, w, _ = random_inputs(mod, np.random.default_rng(5))
    with pytest.raises(TargetError, match="expects 3 arguments") as info:
        deploy.run_module(arm_build(mod, "cortex-a72"), [x, w])
    assert "\n" not in str(info.value)


@pytest.mark.qemu
def test_runtime_libraries_are_aarch64() -> None:
    for lib in runtime_libs.ensure_runtime().libraries:
        header = lib.read_bytes()[:20]
        assert header[:4] == b"\x7fELF"
        assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


def test_unsupported_input_dtype_is_target_error(tmp_path: Path) -> None:
    lib = tmp_path / "m.so"
    lib.write_bytes(b"")
    with pytest.raises(TargetError, match="complex64"):
        deploy.run_module(lib, [np.zeros(3, np.complex64)])


def test_missing_module_is_target_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="not found"):
        deploy.run_module(tmp_path / "absent.so", [])


@pytest.mark.qemu
def test_runner_rejects_bad_npy_files(tmp_path: Path) -> None:
    """Inputs run_module never writes (Fortran order, other dtypes) fail with one line."""
    tools = toolchain.find_toolchain()
    runner, lib_dir = deploy.build_runner(), runtime_libs.ensure_runtime().lib_dir
    cases = {
        "fortran.npy": (np.asfortranarray(np.ones((3, 4), np.float32)), "Fortran-order"),
        "complex.npy": (np.ones(3, np.complex64), "unsupported npy dtype '<c8'"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        proc = subprocess.run(
            [str(tools.qemu), "-L", str(tools.sysroot), "-E", f"LD_LIBRARY_PATH={lib_dir}",
             str(runner), str(tmp_path / "unused.so"), "--in", str(tmp_path / name),
             "--out-dir", str(tmp_path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and message in proc.stderr
