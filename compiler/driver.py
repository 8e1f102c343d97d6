"""The build driver: ONNX file -> Relax -> passes -> target code -> ``.edgec`` package.

Read top to bottom, ``build`` is the whole pipeline: load, fix shapes, simplify,
check operators, import, run passes, compile for the target, package.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from pathlib import Path
from typing import Any

import edgec
from edgec import frontend
from edgec.errors import EdgecError
from edgec.model_stats import model_stats
from edgec.progress import Phases
from edgec.targets import TargetDesc, get_target

_PHASES = ("load", "simplify", "import", "passes", "compile", "package")


def build(
    model: str | os.PathLike[str],
    target: str | TargetDesc = "host",
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    output: str | os.PathLike[str] | None = None,
    passes: list[str] | None = None,
    disable_passes: list[str] | None = None,
    dump_ir: str | os.PathLike[str] | None = None,
    verify: bool = False,
    quiet: bool = True,
) -> "Package":
    """Compile an ONNX model for ``target`` and return the package (saved if ``output``)."""
    from edgec.passes.registry import PassContext, resolve
    from edgec.runtime import Package

    desc = get_target(target) if isinstance(target, str) else target
    _check_target_tools(desc)
    pass_list = resolve(passes, disable_passes)
    ph = Phases(len(_PHASES), quiet=quiet)

    with ph.phase("load", str(model)):
        loaded = frontend.load_model(model)
        fixed = frontend.fix_input_shapes(loaded.proto, input_shapes or {})
    with ph.phase("simplify"):
        simple = frontend.simplify(fixed)
        frontend.check_supported(simple)
        stats = model_stats(simple)
    with ph.phase("import"):
        mod = frontend.to_relax(simple)
    from edgec.pass_runner import run_passes

    ctx = PassContext(target=desc)
    with ph.phase("passes", ", ".join(p.name for p in pass_list) or "none"):
        mod, applied, pass_times = run_passes(mod, pass_list, ctx, dump_ir=dump_ir, verify=verify)
    with ph.phase("compile", desc.name):
        executable = _compile(mod, desc)
    with ph.phase("package"):
        library = _export(executable, desc)
        inputs = frontend.graph_inputs(fixed)
        outputs = frontend.graph_outputs(simple)
        manifest: dict[str, Any] = {
            "edgec_version": edgec.__version__,
            "tvm_version": _tvm_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "target": desc.to_json(),
            "model": {"file": Path(model).name, "sha256": loaded.sha256},
            "inputs": [s.to_json() for s in inputs],
            "outputs": [s.to_json() for s in outputs],
            "passes": applied,
        }
    report = {"model": stats, "time_s": dict(ph.timings), "passes": ctx.report,
              "pass_time_s": pass_times}
    report["time_s"]["total"] = round(sum(ph.timings.values()), 4)
    package = Package.from_parts(manifest, {"model.so": library}, report)
    if output is not None:
        package.save(output)
    return package


def _check_target_tools(desc: TargetDesc) -> None:
    """Fail before any compile work if the target's toolchain is missing."""
    if desc.family == "arm-cpu":
        from edgec.targets.arm_cpu import toolchain

        toolchain.find_cxx()


def _compile(mod: Any, desc: TargetDesc, tuning_db: Path | None = None) -> Any:
    import tvm

    pipeline: Any = "default"
    if desc.family in ("host", "arm-cpu"):
        # Tuned kernels from tuning_db, default CPU schedules for the rest.
        from edgec.targets.cpu import cpu_pipeline

        pipeline = cpu_pipeline(desc, tuning_db)
    try:
        return tvm.compile(mod, target=desc.tvm_target(), relax_pipeline=pipeline)
    except Exception as exc:
        raise EdgecError(f"compile for {desc.name} failed: {frontend._first_line(exc)}") from None


def _export(executable: Any, desc: TargetDesc) -> bytes:
    with tempfile.TemporaryDirectory(prefix="edgec-export-") as tmp:
        lib = Path(tmp) / "model.so"
        if desc.family == "arm-cpu":
            from edgec.targets.arm_cpu.deploy import export_library

            export_library(executable, lib)
        else:
            executable.export_library(str(lib))
        return lib.read_bytes()


def _tvm_version() -> str:
    import tvm

    return str(tvm.__version__)
