"""Loading a ``.edgec`` package and running it on its target's executor."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgec.errors import InputError, PackageError
from edgec.frontend import TensorSpec
from edgec.package import LIBRARY, read_package, write_package
from edgec.shapes import format_shape


class Package:
    """A compiled model: manifest, library and report; ``run`` executes it."""

    def __init__(
        self,
        manifest: dict[str, Any],
        files: dict[str, bytes],
        report: dict[str, Any],
        path: Path | None = None,
    ) -> None:
        self.manifest = manifest
        self.files = files
        self.report = report
        self.path = path
        try:
            self.inputs = [TensorSpec.from_json(s) for s in manifest["inputs"]]
            self.outputs = [TensorSpec.from_json(s) for s in manifest["outputs"]]
            self.target = str(manifest["target"]["name"])
            self.family = str(manifest["target"]["family"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PackageError(f"{path or 'package'}: malformed manifest ({exc})") from None
        self._executor: Any = None

    @classmethod
    def from_parts(
        cls, manifest: dict[str, Any], files: dict[str, bytes], report: dict[str, Any]
    ) -> Package:
        return cls(dict(manifest), dict(files), dict(report))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the package atomically to ``path``."""
        files = {k: v for k, v in self.files.items() if k != "report.json"}
        write_package(path, self.manifest, files, self.report)
        self.path = Path(path)
        return self.path

    # ------------------------------------------------------------------ running

    def check_inputs(self, inputs: Mapping[str, Any] | Sequence[Any]) -> list[np.ndarray]:
        """Validate names, dtypes and shapes; return arrays in the model's input order."""
        if not isinstance(inputs, Mapping):
            inputs = list(inputs)
            if len(inputs) != len(self.inputs):
                raise InputError(f"expected {len(self.inputs)} inputs, got {len(inputs)}")
            inputs = {s.name: a for s, a in zip(self.inputs, inputs)}
        names = [s.name for s in self.inputs]
        unknown = [n for n in inputs if n not in names]
        if unknown:
            raise InputError(
                f"unknown input {unknown[0]!r}; the model's inputs are "
                + ", ".join(repr(n) for n in names)
            )
        arrays = []
        for spec in self.inputs:
            if spec.name not in inputs:
                raise InputError(
                    f"missing input {spec.name!r} ({format_shape(spec.shape)} {spec.dtype})"
                )
            arr = np.asarray(inputs[spec.name])
            if str(arr.dtype) != spec.dtype:
                raise InputError(
                    f"input {spec.name!r} has dtype {arr.dtype}, the package expects {spec.dtype}"
                )
            if tuple(arr.shape) != tuple(spec.shape):
                raise InputError(
                    f"input {spec.name!r} has shape {format_shape(arr.shape)}, the package "
                    f"expects {format_shape(spec.shape)}"
                )
            # ascontiguousarray would turn a 0-d array into 1-d; asarray keeps the rank.
            arrays.append(np.asarray(arr, order="C"))
        return arrays

    def run(self, inputs: Mapping[str, Any] | Sequence[Any]) -> dict[str, np.ndarray]:
        """Run once; returns ``{output name: array}``."""
        arrays = self.check_inputs(inputs)
        outs = self.executor().run(arrays)
        if len(outs) != len(self.outputs):
            raise PackageError(
                f"package returned {len(outs)} outputs, its manifest lists {len(self.outputs)}"
            )
        return {spec.name: out for spec, out in zip(self.outputs, outs)}

    def benchmark(
        self, inputs: Mapping[str, Any] | Sequence[Any], repeat: int = 20, warmup: int = 2
    ) -> dict[str, float]:
        """Time ``repeat`` runs after ``warmup``; milliseconds (mean, median, min)."""
        return self.executor().benchmark(self.check_inputs(inputs), repeat, warmup)

    def random_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs of the right shapes and dtypes (normal floats, small ints)."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for spec in self.inputs:
            shape = tuple(int(d) for d in spec.shape)
            if np.issubdtype(np.dtype(spec.dtype), np.floating):
                feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype == "bool":
                feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
            else:
                feeds[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
        return feeds

    def executor(self) -> Any:
        if self._executor is None:
            self._executor = _make_executor(self.family, self.manifest, self.files)
        return self._executor


def load(path: str | os.PathLike[str]) -> Package:
    """Read and verify a ``.edgec`` package (never unpickles)."""
    contents = read_package(path)
    return Package(contents.manifest, contents.files, contents.report, Path(path))


def _make_executor(family: str, manifest: dict[str, Any], files: dict[str, bytes]) -> Any:
    library = files[LIBRARY]
    if family == "host":
        from edgec.targets.host.runtime import HostExecutor

        return HostExecutor(library, manifest["target"])
    if family == "arm-cpu":
        from edgec.targets.arm_cpu.runtime import QemuExecutor

        return QemuExecutor(library)
    if family == "edge-npu":
        from edgec.targets.edge_npu.runtime import NpuExecutor

        return NpuExecutor(library, files, manifest["target"])
    raise PackageError(f"package target family {family!r} is not known to this edgec")
