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

# Importing a pass module registers it; this order is the tie-break order in a phase:
# fold BN first so later rules see plain conv + add.
from edgec.passes import fold_batchnorm  # noqa: F401  isort: skip
from edgec.passes import fuse_layernorm  # noqa: F401  isort: skip
from edgec.passes import cancel_transpose  # noqa: F401  isort: skip
from edgec.passes import fuse_bias_act  # noqa: F401  isort: skip
from edgec.passes import linear_attention  # noqa: F401  isort: skip
from edgec.passes import quantize  # noqa: F401  isort: skip  (registers quantize-int8)

__all__ = ["PHASES", "PassContext", "PassInfo", "all_passes", "register_pass", "resolve"]
