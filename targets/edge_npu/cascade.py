"""Cascades: a chain of conv layers run band by band in one program.

Layer by layer, each conv waits at its SYNC for the one before to store its last row, and
a layer that waits on the host link (the image in) leaves the array idle. In a cascade
(as Arm's Vela cascades for Ethos-U) each layer's bands are interleaved with its
producer's, so a band starts as soon as the rows it reads are stored: the layers after
the first overlap the first's transfer, and no layer's first load or last store waits
alone.

The members keep their own programs' steps (``programs.conv_queues``); only the step
numbers change. With V buffers (the two banks, or the banks cut into V equal parts) the
step protocol has load g wait for the compute of step g - V, whose first instruction
waited for the stores of step g - 2V: a step's loads are ordered after every store of the
steps at least ``distance(V)`` = 2V before it, so a band is scheduled at least that many
steps after the producer step that stores the last row it reads. When no member can go
on (the chain's end waits on its last producer step), the program ends a wave with a
SYNC and the rest starts afresh. All members share one buffer layout: outputs sit above
the largest member's input band (``reserve``), since a load overwrites only input bytes
while the stores V steps before may still read their outputs.

More buffers let more steps run while one waits on its load: a band of the first conv
that comes over the host link holds its buffer for the whole transfer, and with two
buffers only one other step can compute meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from .config import NpuConfig
from .isa import Dataflow, Instr, Op, make
from .programs import (
    Conv,
    ConvQueues,
    Placement,
    ProgramError,
    conv_queues,
    max_band_rows,
    n_tiles,
)


def distance(buffers: int) -> int:
    """Steps from a store to the first load the protocol orders after it."""
    return 2 * buffers


@dataclass(frozen=True)
class Member:
    """One conv of a cascade: what ``programs.conv2d_layer`` takes (band order)."""

    conv: Conv
    place: Placement
    dataflow: Dataflow | str | None = None
    lut: int | None = None
    band_rows: int | None = None


def _input_rows(c: Conv, rows: int) -> int:
    return (min(rows, c.out_h) - 1) * c.sh + c.kh


def _tile(c: Conv, rows: int) -> int:
    """Bytes of the largest input band (``conv_queues``' ``tile_max``)."""
    return _input_rows(c, rows) * (c.w + c.pad[1] + c.pad[3]) * c.cin


def _out(cfg: NpuConfig, c: Conv, rows: int) -> int:
    return min(rows, c.out_h) * c.out_w * sum(nl for _, nl in n_tiles(c, cfg.cols))


def band_rows(cfg: NpuConfig, members: list[Member], rows: list[int], buffers: int = 2
              ) -> tuple[list[int], int]:
    """Rows per band for each member (at most ``rows``) under one buffer layout, and the
    reserve: every member's outputs fit above the largest member's input band."""
    size = cfg.activation_bank * cfg.activation_banks // buffers
    rows = list(rows)
    arr = [m.conv.on_array() for m in members]
    for _ in range(64):
        reserve = max(_tile(c, r) for c, r in zip(arr, rows))
        over = [i for i, (c, r) in enumerate(zip(arr, rows))
                if reserve + _out(cfg, c, r) > size]
        if not over:
            return rows, reserve
        # the largest input band shrinks first: that lowers the reserve for everyone
        big = max(range(len(arr)), key=lambda i: _tile(arr[i], rows[i]))
        i = big if rows[big] > 1 else over[0]
        if rows[i] == 1:
            raise ProgramError(f"cascade: conv {members[i].conv} does not fit a {size} B "
                               f"buffer beside a {reserve} B input band")
        rows[i] -= 1
    raise ProgramError("cascade: no bank layout found")


def needs(producer_rows: int, conv: Conv, rows: int) -> list[int]:
    """For each band of ``conv`` (``rows`` output rows each): the producer's step (of
    ``producer_rows`` rows each) that stores the last input row the band reads."""
    c = conv.on_array()
    out = []
    for oy0 in range(0, c.out_h, rows):
        last_out = min(oy0 + rows, c.out_h) - 1
        y_hi = min(c.h, last_out * c.sh + c.kh - c.pad[0])  # one past the last row read
        out.append(max(0, y_hi - 1) // producer_rows)
    return out


def schedule(steps: list[int], deps: list[list[int]], dist: int = 4
             ) -> list[list[tuple[int, int]]]:
    """Waves of (member, step) in program order. Member i's step b may follow member
    i - 1's step ``deps[i][b]`` by ``dist`` steps in the same wave, or come in a later
    wave. Of the members that may go next, the one that went longest ago goes (ties: the
    deepest), so every member's bands spread over the wave; if none may, a new wave
    starts."""
    n = len(steps)
    nxt = [0] * n
    where: list[list[tuple[int, int] | None]] = [[None] * k for k in steps]
    waves: list[list[tuple[int, int]]] = [[]]
    left = sum(steps)
    seen, stamp = [-1] * n, 0  # when each member last went
    while left:
        wave, g = len(waves) - 1, len(waves[-1])
        pick = None
        for i in sorted(range(n), key=lambda i: (seen[i], -i)):
            b = nxt[i]
            if b >= steps[i]:
                continue
            if i == 0:
                pick = i
                break
            at = where[i - 1][deps[i][b]]
            if at is not None and (at[0] < wave or at[1] + dist <= g):
                pick = i
                break
        if pick is None:
            waves.append([])
            continue
        where[pick][nxt[pick]] = (wave, g)
        seen[pick] = stamp
        stamp += 1
        waves[-1].append((pick, nxt[pick]))
        nxt[pick] += 1
        left -= 1
    return waves


def cascade_queues(cfg: NpuConfig, members: list[Member], min_bands: int = 1,
                   buffers: int = 2) -> tuple[list[ConvQueues], list[list[tuple[int, int]]]]:
    """Each member's queues with its steps numbered into the cascade's waves over
    ``buffers`` buffers; a member without ``band_rows`` gets at least ``min_bands`` bands
    where its rows allow."""
    if len(members) < 2:
        raise ProgramError("a cascade needs at least two convs")
    for a, b in pairwise(members):
        if a.conv.out_shape != (b.conv.h, b.conv.w, b.conv.cin):
            raise ProgramError(f"cascade: conv {b.conv} does not read conv {a.conv}'s output")
    default = []
    for m in members:
        c = m.conv.on_array()
        default.append(m.band_rows or min(
            conv_queues(cfg, m.conv, m.place, m.dataflow, m.lut).band_rows,
            -(-c.out_h // min_bands)))
        if default[-1] > max_band_rows(cfg, c, residual=m.place.residual is not None):
            raise ProgramError(f"cascade: conv {m.conv}: {default[-1]} rows do not fit")
    rows, reserve = band_rows(cfg, members, default, buffers)
    steps = [-(-m.conv.on_array().out_h // r) for m, r in zip(members, rows)]
    deps = [[]] + [needs(rows[i - 1], members[i].conv, rows[i]) for i in range(1, len(members))]
    waves = schedule(steps, deps, distance(buffers))
    slots: list[list[tuple[int, int]]] = [[] for _ in members]
    for wave in waves:
        for g, (i, _) in enumerate(wave):
            slots[i].append((g, len(wave)))
    queues = [conv_queues(cfg, m.conv, m.place, m.dataflow, m.lut, r, "band", s, reserve,
                          buffers) for m, r, s in zip(members, rows, slots)]
    return queues, waves


def cascade_program(cfg: NpuConfig, members: list[Member], post: list | None = None,
                    min_bands: int = 1, buffers: int = 2) -> list[Instr]:
    """One program (a SYNC per wave) running ``members`` as a cascade; ``post``: per
    member, a function applied to its instructions (the layer's rounding)."""
    queues, waves = cascade_queues(cfg, members, min_bands, buffers)
    prog: list[Instr] = []
    for wave in waves:
        prog.append(make(Op.SYNC))
        for i, b in wave:
            part = [ins for q in queues[i].step(b) for ins in q]
            prog += post[i](part) if post and post[i] else part
    return prog


__all__ = [
    "Member",
    "band_rows",
    "cascade_program",
    "cascade_queues",
    "distance",
    "needs",
    "schedule",
]
