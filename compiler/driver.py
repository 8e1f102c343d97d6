"""The build driver: ONNX file -> Relax -> passes -> target code -> ``.edgec`` package.

Read top to bottom, ``build`` is the whole pipeline: load, fix shapes, simplify,
check operators, import, run passes, compile for the target, package.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edgec
from edgec import frontend, limits
from edgec.errors import EdgecError
from edgec.model_stats import model_stats
from edgec.passes.quantize.observers import DEFAULT_METHOD
from edgec.progress import Phases
from edgec.targets import TargetDesc, get_target

if TYPE_CHECKING:
    from edgec.runtime import Package

_PHASES = ("load", "simplify", "import", "passes", "partition", "compile", "package")


@dataclass
class Imported:
    """The model after the front half of the pipeline: ONNX forms, Relax, reports."""

    loaded: frontend.LoadedModel
    fixed: Any  # onnx.ModelProto with static input shapes
    simple: Any  # after simplification (and quantization, if asked)
    stats: dict[str, Any]
    mod: Any  # Relax IRModule after the passes
    applied: list[str]
    pass_times: dict[str, float]
    pass_report: dict[str, Any]
    quant_report: dict[str, Any] | None


def import_model(
    model: str | os.PathLike[str],
    desc: TargetDesc,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    passes: list[str] | None = None,
    disable_passes: list[str] | None = None,
    dump_ir: str | os.PathLike[str] | None = None,
    verify: bool = False,
    quantize: str | None = None,
    calib: str | os.PathLike[str] | None = None,
    calib_method: str = DEFAULT_METHOD,
    accuracy_budget: str | None = None,
    options: dict[str, Any] | None = None,
    max_model_bytes: int | str | None = None,
    phases: Phases | None = None,
) -> Imported:
    """Load, fix shapes, simplify, (quantize,) import and run the passes.

    ``build`` compiles what this returns; the tuner tunes it, so both see the same
    kernels.
    """
    from edgec.pass_runner import run_passes
    from edgec.passes.registry import PassContext, resolve

    ph = phases or Phases(len(_PHASES), quiet=True)
    # A target that offloads QDQ ops itself (edge-npu) keeps the QDQ form.
    cpu_int8 = quantize and "offload-qdq" not in desc.features
    enabled = [*(passes or []), *(["quantize-int8"] if cpu_int8 else [])]
    pass_list = resolve(enabled, disable_passes)
    with ph.phase("load", str(model)):
        limits.check_model_size(model, limits.max_model_bytes(max_model_bytes))
        loaded = frontend.load_model(model)
    with ph.phase("simplify"):
        fixed, simple = frontend.prepare(loaded.proto, input_shapes)
        stats = model_stats(simple)
        quant_report = None
        if quantize:
            from edgec.quantization import quantize_for_build

            simple, quant_report = quantize_for_build(
                simple, quantize, calib, calib_method, accuracy_budget,
                style="anchors" if cpu_int8 else "npu",
            )
    with ph.phase("import"):
        mod = frontend.to_relax(simple)
    samples = None
    if calib is not None:
        from edgec.calibration import load_samples

        samples = load_samples(calib, frontend.graph_inputs(fixed))
    ctx = PassContext(target=desc, calib=samples, options=dict(options or {}))
    with ph.phase("passes", ", ".join(p.name for p in pass_list) or "none"):
        mod, applied, pass_times = run_passes(mod, pass_list, ctx, dump_ir=dump_ir, verify=verify)
    return Imported(loaded, fixed, simple, stats, mod, applied, pass_times, ctx.report,
                    quant_report)


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
    quantize: str | None = None,
    calib: str | os.PathLike[str] | None = None,
    calib_method: str = DEFAULT_METHOD,
    accuracy_budget: str | None = None,
    tuning_db: str | os.PathLike[str] | None = None,
    options: dict[str, Any] | None = None,
    max_model_bytes: int | str | None = None,
    compile_timeout: float | str | None = None,
    hard_deadline: bool = False,
    quiet: bool = True,
) -> Package:
    """Compile an ONNX model for ``target`` and return the package (saved if ``output``).

    ``options`` are pass options (e.g. ``{"linear_attention": "auto", "attention_error":
    0.02}``); ``calib`` is a calibration .npz or folder, read by quantization and by
    passes that measure their error.
    """
    from edgec.runtime import Package

    desc = get_target(target) if isinstance(target, str) else target
    _check_target_tools(desc)
    timeout = limits.compile_timeout(compile_timeout)  # a bad value fails before any work
    db = Path(tuning_db) if tuning_db is not None else None
    if db is not None:
        _check_tuning_db(db, desc)
    ph = Phases(len(_PHASES), quiet=quiet)
    imp = import_model(
        model, desc, input_shapes=input_shapes, passes=passes, disable_passes=disable_passes,
        dump_ir=dump_ir, verify=verify, quantize=quantize, calib=calib,
        calib_method=calib_method, accuracy_budget=accuracy_budget, options=options,
        max_model_bytes=max_model_bytes, phases=ph,
    )
    mod, extra_files, npu_report = imp.mod, {}, None
    with ph.phase("partition", desc.name):
        if desc.family == "edge-npu":
            from edgec.targets.edge_npu.offload import offload
            from edgec.targets.edge_npu.target import config_of

            off = offload(mod, config_of(desc), mappings=_npu_mappings(db, config_of(desc)))
            mod, extra_files, npu_report = off.mod, off.files, off.report
    deadline = limits.compile_deadline(timeout, "compile", hard=hard_deadline)
    with ph.phase("compile", desc.name), deadline:
        executable = compile_relax(mod, desc, db)
    with ph.phase("package"):
        library = _export(executable, desc)
        manifest: dict[str, Any] = {
            "edgec_version": edgec.__version__,
            "tvm_version": _tvm_version(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "target": desc.to_json(),
            "model": {"file": Path(model).name, "sha256": imp.loaded.sha256},
            "inputs": [s.to_json() for s in frontend.graph_inputs(imp.fixed)],
            "outputs": [s.to_json() for s in frontend.graph_outputs(imp.simple)],
            "passes": imp.applied,
            "tuned": db is not None,
        }
    report: dict[str, Any] = {
        "model": imp.stats, "time_s": dict(ph.timings), "passes": imp.pass_report,
        "pass_time_s": imp.pass_times,
    }
    if imp.quant_report is not None:
        report["quantization"] = imp.quant_report
        manifest["quantization"] = {
            "scheme": "int8", "method": imp.quant_report["method"],
            "kept_float": imp.quant_report["kept_float"]
        }
    if npu_report is not None:
        report["npu"] = npu_report
    report["time_s"]["total"] = round(sum(ph.timings.values()), 4)
    package = Package.from_parts(manifest, {"model.so": library, **extra_files}, report)
    if output is not None:
        package.save(output)
    return package


def _check_target_tools(desc: TargetDesc) -> None:
    """Fail before any compile work if the target's toolchain is missing."""
    if desc.family == "arm-cpu":
        from edgec.targets.arm_cpu import toolchain

        toolchain.find_cxx()


def _check_tuning_db(db: Path, desc: TargetDesc) -> None:
    """The folder must be a database ``edgec tune`` wrote for this target family.

    Checked before any work, and because TVM's JSONDatabase would otherwise create empty
    files in whatever folder it is given and the build would silently use no records."""
    if not db.is_dir():
        raise EdgecError(f"--tuning-db {db}: no such folder (create it with `edgec tune`)")
    if desc.family == "edge-npu":
        from edgec.targets.edge_npu.tuner import DB_FILE as expected
    else:
        from edgec.tuning import WORKLOADS as expected
    if not (db / expected).is_file():
        raise EdgecError(f"--tuning-db {db}: no {expected} in it, so not an edgec tuning "
                         f"database for {desc.family} (create one with `edgec tune --target "
                         f"{desc.name}`)")


def _npu_mappings(db: Path | None, config: Any) -> Any:
    """Tuned edge-npu layer mappings from ``edgec tune --target edge-npu`` (or None)."""
    if db is None:
        return None
    from edgec.targets.edge_npu.config import load_config
    from edgec.targets.edge_npu.tuner import load_mappings

    cfg = config if not isinstance(config, str) else load_config(config)
    return load_mappings(db, cfg.name)


def compile_relax(mod: Any, desc: TargetDesc, tuning_db: Path | None = None) -> Any:
    """``mod`` compiled for ``desc`` as ``edgec build`` compiles it (CPU schedules included).

    Benchmarks and cost models call this so they time the code users get.
    """
    import tvm

    pipeline: Any = "default"
    if desc.family in ("host", "arm-cpu", "edge-npu"):  # edge-npu: the CPU parts
        # Tuned kernels from tuning_db, default CPU schedules for the rest.
        from edgec.targets.cpu import cpu_pipeline

        pipeline = cpu_pipeline(desc, tuning_db)
    try:
        return tvm.compile(mod, target=desc.tvm_target(), relax_pipeline=pipeline)
    except Exception as exc:  # noqa: BLE001  TVM raises plain errors; one line for the user
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
