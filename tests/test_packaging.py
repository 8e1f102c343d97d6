"""The installed distribution holds every subpackage and its data files."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"compiler": "edgec", "passes": "edgec.passes", "targets": "edgec.targets"}


def _source_packages() -> set[str]:
    found = set()
    for folder, name in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            parts = [p for p in rel.parts if p != "."]
            found.add(".".join([name, *parts]))
    return found


def test_every_subpackage_is_listed() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    # passes/ and targets/ also appear under compiler/ once mapped; only real folders count.
    assert _source_packages() - listed == set(), "add these to [tool.setuptools] packages"


@pytest.mark.slow
def test_installed_copy_imports_everything(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )
    code = (
        "import importlib, sys\n"
        f"names = {sorted(_source_packages())!r}\n"
        "for n in names:\n"
        "    m = importlib.import_module(n)\n"
        f"    assert m.__file__.startswith({str(target)!r}), (n, m.__file__)\n"
        "from edgec.targets import get_target\n"
        "get_target('arm-cpu:cortex-a55')\n"
        "from edgec.targets.arm_cpu import deploy\n"
        "from pathlib import Path\n"
        "assert (Path(deploy.__file__).parent / 'runner.cc').is_file()\n"
        "from edgec.targets.edge_npu.config import load_config\n"
        "assert [load_config(n).name for n in ('edge-npu', 'edge-npu-s')] == ['edge-npu', 'edge-npu-s']\n"
        "import edgec.targets.edge_npu as npu\n"
        "npu_dir = Path(npu.__file__).parent\n"
        "assert len(list((npu_dir / 'workloads').glob('*.csv'))) >= 2\n"
        "assert (npu_dir / 'supported_ops.json').is_file()\n"
        "print('ok', len(names))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
