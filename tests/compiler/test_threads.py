"""edgec runs TVM kernels on one thread per physical core unless the user chose a count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgec import threads


def _fake_sysfs(root: Path, cores: dict[int, tuple[str, str]]) -> Path:
    for cpu, (package, core) in cores.items():
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(package + "\n")
        (topo / "core_id").write_text(core + "\n")
    return root


def test_smt_siblings_count_as_one_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    sysfs = _fake_sysfs(tmp_path, {0: ("0", "0"), 1: ("0", "1"), 2: ("0", "0"), 3: ("0", "1")})
    assert threads.physical_cores(sysfs) == 2


def test_cores_without_smt_all_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    sysfs = _fake_sysfs(tmp_path, {0: ("0", "0"), 1: ("0", "1"), 2: ("1", "0")})
    assert threads.physical_cores(sysfs) == 3


def test_only_the_cpus_this_process_may_use_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    sysfs = _fake_sysfs(tmp_path, {0: ("0", "0"), 1: ("0", "1")})
    assert threads.physical_cores(sysfs) == 1


def test_without_topology_logical_cpus_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert threads.physical_cores(tmp_path) == 3


@pytest.mark.parametrize("var", ["TVM_NUM_THREADS", "OMP_NUM_THREADS"])
def test_a_count_the_user_set_is_kept(var: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(var, "3")
    assert threads.configure_threads() is None
    assert os.environ[var] == "3"


def _pool_size(env: dict[str, str]) -> int:
    code = "import edgec, tvm; print(tvm.get_global_func('runtime.NumThreads')())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_tvm_thread_pool_uses_every_physical_core() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    # TVM alone would take hardware_concurrency() / 2 on x86-64 (1 on a 2-core VM without SMT).
    assert _pool_size(env) == threads.physical_cores()
    assert _pool_size({**env, "TVM_NUM_THREADS": "1"}) == 1
