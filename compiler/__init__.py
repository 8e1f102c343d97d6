"""edgec: compile trained ONNX models for edge hardware on Apache TVM Relax."""

from __future__ import annotations

__version__ = "0.1.0"

from edgec.errors import EdgecError  # noqa: E402
from edgec.threads import configure_threads  # noqa: E402

# Before any kernel runs: TVM's own default leaves half the cores idle without SMT.
configure_threads()

__all__ = ["EdgecError", "__version__"]


def build(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Compile an ONNX model into a package; see :func:`edgec.driver.build`."""
    from edgec.driver import build as _build

    return _build(*args, **kwargs)


def load(path):  # type: ignore[no-untyped-def]
    """Load a ``.edgec`` package; see :func:`edgec.runtime.load`."""
    from edgec.runtime import load as _load

    return _load(path)


def register_pass(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Register a pass; see :func:`edgec.passes.registry.register_pass`."""
    from edgec.passes.registry import register_pass as _register

    return _register(*args, **kwargs)


__all__ += ["build", "load", "register_pass"]
