"""ONNX's own node test cases run through ``edgec.onnx_backend``, one case at a time.

``collect`` gathers the cases from ``onnx.backend.test.case.node`` (the wheel does not
ship the data folders); ``run_case`` compiles and runs one and classifies the result:

- ``pass``: every output has ONNX's expected shape, dtype and values (the tolerances
  the case declares, as in ONNX's own runner). ``folded`` marks passes where the
  optimizer folded the whole graph to constants (no compiled kernel computed them).
- ``mismatch``: compiled and ran, wrong shape, dtype or values.
- ``unsupported``: edgec refused with an ``EdgecError`` (unknown op, import or compile
  failure), or the case uses values edgec does not take (sequences, optionals, maps).
- ``error``: any other exception: a bug in edgec or TVM.
The crash and timeout outcomes are decided by the process running the case.
"""

from __future__ import annotations

import collections
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

STATUSES = ("pass", "mismatch", "unsupported", "error", "crash", "timeout")


@dataclass
class CaseResult:
    name: str
    op: str
    status: str
    detail: str = ""
    seconds: float = 0.0
    folded: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def collect(pattern: str | None = None) -> list[Any]:
    """ONNX node test cases (``TestCase`` tuples), optionally filtered by a regex on the name."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    rx = re.compile(pattern) if pattern else None
    return sorted((c for c in cases if rx is None or rx.search(c.name)), key=lambda c: c.name)


def op_names(cases: list[Any]) -> dict[str, str]:
    """Test name -> the operator it tests (``_expanded`` cases count for their op)."""
    base: dict[str, str] = {}
    for c in cases:
        ops = [n.op_type for n in c.model.graph.node if n.op_type != "Constant"]
        base[c.name] = collections.Counter(ops).most_common(1)[0][0] if ops else "Constant"
    out = {}
    for c in cases:
        root = re.sub(r"_expanded(_ver\d+)?$", "", c.name)
        out[c.name] = base.get(root, base[c.name])
    return out


def _plain(value: Any) -> bool:
    return isinstance(value, (np.ndarray, np.generic))


def _array(value: Any) -> Any:
    if isinstance(value, onnx.TensorProto):
        from onnx import numpy_helper

        return numpy_helper.to_array(value)
    return value


def assert_similar(expected: list[Any], got: list[Any], rtol: float, atol: float) -> None:
    """ONNX's own output comparison; ml_dtypes' narrow types compared as float32.

    numpy cannot promote float8/float4/int4 with a Python float, so ONNX's runner
    fails on them with a TypeError before comparing. Here dtype and shape must match
    exactly, then the values are compared as float32 with the case's tolerances.
    """
    from onnx.backend.test.runner import Runner

    if len(expected) == len(got):
        for i, (e, g) in enumerate(zip(expected, got)):
            if isinstance(e, np.ndarray) and e.dtype.name in _NARROW_NAMES:
                if g.dtype != e.dtype or g.shape != e.shape:
                    raise AssertionError(
                        f"output {i}: {g.dtype}{list(g.shape)} != {e.dtype}{list(e.shape)}")
                np.testing.assert_allclose(g.astype(np.float32), e.astype(np.float32),
                                           rtol=rtol, atol=atol)
                expected[i], got[i] = np.zeros(()), np.zeros(())
    Runner.assert_similar_outputs(expected, got, rtol, atol)


_NARROW_NAMES = {"float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                 "float8_e8m0fnu", "float4_e2m1fn", "int4", "uint4", "int2", "uint2"}


def run_case(case: Any, op: str = "") -> CaseResult:
    """Compile and run one case on the host; never raises."""
    from edgec import onnx_backend
    from edgec.errors import EdgecError
    start = time.perf_counter()

    def result(status: str, detail: str = "", folded: bool = False) -> CaseResult:
        return CaseResult(case.name, op, status, detail[:300], time.perf_counter() - start, folded)

    data_sets = []
    for inputs, outputs in case.data_sets:
        # ONNX hands over tensors of types numpy lacks (float8, int4, ...) as protos;
        # to_array turns them into ml_dtypes arrays.
        inputs, outputs = [_array(v) for v in inputs], [_array(v) for v in outputs]
        if not all(_plain(v) for v in inputs + outputs):
            return result("unsupported", "sequence, optional or map values")
        data_sets.append((inputs, outputs))
    try:
        rep = onnx_backend.prepare(case.model)
        for inputs, expected in data_sets:
            got = rep.run(list(inputs))
            try:
                assert_similar(list(expected), list(got), case.rtol, case.atol)
            except AssertionError as exc:
                return result("mismatch", " ".join(str(exc).split()))
    except EdgecError as exc:
        return result("unsupported", str(exc))
    except Exception as exc:
        return result("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    folded = rep.last is not None and rep.last.nodes == 0
    return result("pass", folded=folded)
