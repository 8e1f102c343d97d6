"""Graph passes on Relax IRModules, and the registry that orders them.

Importing this package registers the built-in passes.
"""

from __future__ import annotations

from edgec.passes.registry import (
    PHASES,
    PassContext,
    PassInfo,
    all_passes,
    register_pass,
    resolve,
)

__all__ = ["PHASES", "PassContext", "PassInfo", "all_passes", "register_pass", "resolve"]
