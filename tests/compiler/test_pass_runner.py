"""run_passes: order, error wrapping, --dump-ir files, --verify naming the pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tvm
from edgec.errors import EdgecError
from edgec.pass_runner import run_passes
from edgec.passes.registry import PassContext, PassInfo
from tvm import relax

from tests.passes._harness import build_main, tensor


def _mod() -> tvm.IRModule:
    return build_main({"x": tensor((2, 3))}, lambda bb, x: relax.op.nn.relu(x))


def _info(name: str, fn: Any) -> PassInfo:
    return PassInfo(name, "optimize", fn, "", "user")


def _identity(mod: tvm.IRModule, ctx: PassContext) -> tvm.IRModule:
    return mod


def _boom(mod: tvm.IRModule, ctx: PassContext) -> tvm.IRModule:
    raise ValueError("weight is not constant")


def _ill_formed(mod: tvm.IRModule, ctx: PassContext) -> tvm.IRModule:
    # uses a variable that is defined nowhere
    stray = relax.Var("stray", tensor((2, 3)))
    func = relax.Function([relax.Var("x", tensor((2, 3)))], stray, tensor((2, 3)))
    return tvm.IRModule({"main": func})


def test_runs_in_order_and_times_each_pass() -> None:
    _, applied, timings = run_passes(_mod(), [_info("a", _identity), _info("b", _identity)],
                                       PassContext(target=None))
    assert applied == ["a", "b"]
    assert set(timings) == {"a", "b"} and all(t >= 0 for t in timings.values())


def test_failure_names_the_pass_and_those_before_it() -> None:
    passes = [_info("a", _identity), _info("b", _identity), _info("bad", _boom)]
    with pytest.raises(EdgecError, match=r"pass bad after \[a, b\]: weight is not constant"):
        run_passes(_mod(), passes, PassContext(target=None))


def test_dump_ir_writes_numbered_tvmscript(tmp_path: Path) -> None:
    passes = [_info("fold-batchnorm", _identity), _info("my pass", _identity)]
    run_passes(_mod(), passes, PassContext(target=None), dump_ir=tmp_path / "ir")
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert files == ["00-import.py", "01-fold-batchnorm.py", "02-my_pass.py"]
    assert "R.nn.relu" in (tmp_path / "ir" / "01-fold-batchnorm.py").read_text()


def test_verify_names_the_pass_that_broke_the_module() -> None:
    passes = [_info("a", _identity), _info("breaker", _ill_formed)]
    with pytest.raises(EdgecError, match=r"--verify: pass breaker after \[a\]"):
        run_passes(_mod(), passes, PassContext(target=None), verify=True)
    # without --verify the same pass goes through (the compile would fail later)
    run_passes(_mod(), passes, PassContext(target=None))


def test_a_pass_returning_a_non_module_is_named() -> None:
    with pytest.raises(EdgecError, match="pass none after \\[\\]: returned NoneType"):
        run_passes(_mod(), [_info("none", lambda mod, ctx: None)], PassContext(target=None))
