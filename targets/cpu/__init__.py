"""Default CPU schedules (x86 AVX2/AVX-512, aarch64 NEON) and the CPU Relax pipeline.

One file per kernel class of rules (matmul, conv, pool, norm, elementwise,
reduction), ``tiling`` for the register tiling they share, ``apply`` for the pass,
``pipeline`` for ``cpu_pipeline``; ``fast_math`` swaps libm exp/erf/tanh for
vectorizable polynomials before legalize, ``pack`` lays constant matmul weights
out in panels at build time.
"""

from edgec.targets.cpu.pipeline import cpu_pipeline, schedule_passes

__all__ = ["cpu_pipeline", "schedule_passes"]
