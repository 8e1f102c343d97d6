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
on (the chain's end waits on its last producer step), a bubble step (zero-row DMAs
carrying the tokens) takes the slot. All members share one buffer layout: outputs sit above
the largest member's input band (``reserve``), since a load overwrites only input bytes
while the stores V steps before may still read their outputs.

More buffers let more steps run while one waits on its load: a band of the first conv
that comes over the host link holds its buffer for the whole transfer, and with two
buffers only one other step can compute meanwhile.

Over the host queue (``HostLink``) no step waits on the link: the first conv reads its
input from a staging area in the parameter cache that XFERs fill row by row, each band's
first load waiting for the XFER of the rows it is the first to read; the last conv
stores into a staging area that an XFER per step empties to the host once the step's
stores are done. The load and store queues then move only on-chip bytes. An input too
large to stage whole stages in a ring of slots, each holding the rows of a run of
consecutive bands (the rows two runs share come over the link twice); an XFER into a
slot waits for the last load of the run that held it before.

A member's output may go through a row ring (``Member.ring``) instead of a whole tensor:
row r of it lives at row r mod R of the ring, as in Vela's rolling buffers, so a long
chain's intermediates need not all be alive at once. R is a multiple of the producer's
step rows, so no store wraps; a consumer load that does is cut in two. A producer step
overwrites the rows R before its own, so it comes after every consumer band that reads
them (``schedule``'s ``frees``): the protocol orders a step's stores after the loads of
every step before it (the store waits for its compute, which waits for its load, and the
load queue runs in order).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from .config import NpuConfig
from .isa import Dataflow, Instr, Kind, Op, Space, VecOp, make
from .programs import (
    Conv,
    ConvQueues,
    Placement,
    ProgramError,
    act_loads,
    band_bytes,
    buffer_bytes,
    conv_queues,
    default_band_rows,
    max_band_rows,
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
    ring: int = 0  # bytes of a row ring at ``place.out`` its output goes through; 0: whole

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.conv.out_shape

    @property
    def out_h(self) -> int:
        """Output rows the array computes (a transposed conv's input rows)."""
        return self.conv.out_h

    @property
    def phases(self) -> int:
        """Rows of the output tensor that one computed row stores."""
        return self.conv.phases

    def band_bytes(self, cfg: NpuConfig, rows: int) -> tuple[int, int]:
        """(input, output) bytes of one band of ``rows`` output rows."""
        return band_bytes(cfg, self.conv.on_array(), rows)


@dataclass(frozen=True)
class Copy:
    """An HWC tensor's rows moved through the buffers from ``src`` to ``dst``: put first in
    a cascade whose first conv reads the host, it cuts the transfer into steps that the
    other members' short steps come between (a band of that conv loaded from the host
    would hold its buffer for the whole transfer). ``clamp``: PCACHE address of a CLAMP
    block of [-128, 127], the vector unit's copy from the input to the output area."""

    h: int
    w: int
    c: int
    src: tuple[Space, int]
    dst: tuple[Space, int]
    clamp: int
    rows: int = 4

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.h, self.w, self.c)

    @property
    def out_h(self) -> int:
        return self.h

    phases = 1

    def band_bytes(self, cfg: NpuConfig, rows: int) -> tuple[int, int]:
        """(input, output) bytes of one step of ``rows`` rows: the same rows twice."""
        n = min(rows, self.h) * self.w * self.c
        return n, n


@dataclass(frozen=True)
class HostLink:
    """A cascade's host transfers on the host queue. ``inp``: (host address, PCACHE
    address) of the first conv's input, which that conv reads at the PCACHE address;
    ``out``: (PCACHE address, host address) of the last conv's output, which it stores
    at the PCACHE address. ``slots`` k > 0: the output's staging area is a ring of k
    slots of ``slot`` bytes, step b's rows in slot b % k: its stores wait for the XFER
    that emptied the slot k steps before (the host queue's ``prev`` token).
    ``in_slots`` k > 0: the input's staging area is a ring of k slots of ``in_rows``
    input rows; run j of consecutive first-conv bands (as many as a slot holds) reads
    slot j % k, and the XFER that fills it waits for the last load of run j - k (the
    host queue's ``next`` token). Not with an output ring: the outbound XFERs queue
    behind the inbound ones, which would wait on loads that wait on the output's slots."""

    inp: tuple[int, int] | None = None
    out: tuple[int, int] | None = None
    slots: int = 0
    slot: int = 0
    in_slots: int = 0
    in_rows: int = 0


@dataclass(frozen=True)
class _Ring:
    """A member's output through a row ring: ``rows`` rows of ``row`` bytes at ``base``
    (where the whole tensor's row 0 would be)."""

    base: int
    row: int
    rows: int

    def at(self, dram: int) -> tuple[int, int]:
        """(ring row, byte in the row) of the tensor byte at ``dram``."""
        r, rest = divmod(dram - self.base, self.row)
        return r % self.rows, rest


def _ring_rows(m: Member) -> int:
    """Rows of ``m``'s output its ring holds (before rounding to its steps)."""
    _, w, ch = m.out_shape
    return m.ring // (w * ch)


def _rings(members: list[Member | Copy], rows: list[int]) -> dict[int, _Ring]:
    """The ring of each member whose output goes through one, for ``rows`` rows a step:
    as many whole steps of its rows as it holds. Every band of the consumer must fit in
    it beside one producer step, else the two could wait on each other."""
    rings: dict[int, _Ring] = {}
    for i, m in enumerate(members):
        if not isinstance(m, Member) or not m.ring:
            continue
        if i == len(members) - 1:
            raise ProgramError("cascade: the last member's output is whole, not a ring")
        step = rows[i] * m.phases
        n = _ring_rows(m) // step * step
        nxt = members[i + 1]
        assert isinstance(nxt, Member)
        reach = max(hi - lo for lo, hi in zip(rows_from(nxt.conv, rows[i + 1]),
                                              rows_read(nxt.conv, rows[i + 1])))
        if n < reach + step:
            raise ProgramError(f"cascade: a ring of {n} rows does not hold a {reach}-row "
                               f"band of {nxt.conv} beside a {step}-row step")
        rings[i] = _Ring(m.place.out[1], m.out_shape[1] * m.out_shape[2], n)
    return rings


def _frees(members: list[Member | Copy], rows: list[int], rings: dict[int, _Ring]
           ) -> list[list[int]]:
    """For each member whose output goes through a ring, for each of its steps: the last
    band of the consumer that reads a row the step overwrites (-1: none)."""
    frees: list[list[int]] = [[] for _ in members]
    for i, ring in rings.items():
        m, nxt = members[i], members[i + 1]
        assert isinstance(nxt, Member)
        step, h = rows[i] * m.phases, m.out_shape[0]
        los = rows_from(nxt.conv, rows[i + 1])
        for b in range(-(-h // step)):
            gone = min((b + 1) * step, h) - ring.rows  # rows below this are overwritten
            frees[i].append(max((c for c, lo in enumerate(los) if lo < gone), default=-1))
    return frees


def _ring_store(ins: Instr, ring: _Ring) -> Instr:
    """A producer's STORE moved into its ring (a step's rows never wrap)."""
    r, rest = ring.at(ins.dram)
    return Instr(ins.op, dict(ins.fields, dram=ring.base + r * ring.row + rest), ins.deps)


def _ring_load(ins: Instr, ring: _Ring) -> list[Instr]:
    """A consumer's LOAD of whole rows moved into the producer's ring, cut in two where
    the rows wrap: the first part keeps the pops, the second the pushes, and the second
    lands where the rows after the first's would (its padding below, not above)."""
    r, rest = ring.at(ins.dram)
    n = max(ins.rows, 1)
    if rest or (n > 1 and ins.stride != ring.row):
        raise ProgramError(f"cascade: a load of a ring ({ins.fields}) is not of whole rows")
    if r + n <= ring.rows:
        return [Instr(ins.op, dict(ins.fields, dram=ring.base + r * ring.row), ins.deps)]
    first = ring.rows - r
    row_bytes = (ins.cols + ins.pad_left + ins.pad_right) * ins.depth
    pops = frozenset(d for d in ins.deps if d.startswith("pop"))
    a = dict(ins.fields, dram=ring.base + r * ring.row, rows=first, pad_bottom=0,
             stride=ring.row if first > 1 else 0)
    b = dict(ins.fields, dram=ring.base, rows=n - first, pad_top=0,
             sram=ins.sram + (ins.pad_top + first) * row_bytes,
             stride=ring.row if n - first > 1 else 0)
    return [Instr(ins.op, a, pops), Instr(ins.op, b, ins.deps - pops)]


def _through_rings(step: tuple[list[Instr], list[Instr], list[Instr]],
                   out: _Ring | None, inp: _Ring | None, span: tuple[int, int]
                   ) -> tuple[list[Instr], list[Instr], list[Instr]]:
    """A member's step with its stores moved into its output's ring (``out``) and its
    loads of the PCACHE range ``span`` (its input, whole) into its producer's (``inp``)."""
    load, comp, store = step
    if inp is not None:
        lo, hi = span
        load = [part for ins in load for part in (
            _ring_load(ins, inp) if ins.op == Op.LOAD and ins.kind == Kind.ACT
            and ins.space == Space.PCACHE and lo <= ins.dram < hi else [ins])]
    if out is not None:
        store = [_ring_store(ins, out) for ins in store]
    return load, comp, store


@dataclass
class _Edit:
    """What a step's instructions gain on a host link: flags on its first and last load,
    first and last store, a shift of its stores' addresses (into a ring slot), and a
    shift of its loads from the PCACHE range ``span`` (out of an input ring's slot)."""

    load: tuple[str, ...] = ()
    last_load: tuple[str, ...] = ()
    first_store: tuple[str, ...] = ()
    last_store: tuple[str, ...] = ()
    shift: int = 0
    load_shift: int = 0
    span: tuple[int, int] = (0, 0)


def _link_steps(members: list[Member | Copy], queues: list[ConvQueues], link: HostLink
                ) -> tuple[list[Instr], dict[tuple[int, int], _Edit]]:
    """The XFERs (inbound first: they wait on nothing, so they stream the link from the
    start) and each step's edits: the first load of a first-conv band that reads rows
    no band before it read pops their XFER's token; the last store of each last-conv
    step pushes one to its XFER (and, in a ring, its first store pops the token of the
    XFER that emptied its slot)."""
    xfers: list[Instr] = []
    edits: dict[tuple[int, int], _Edit] = {}
    if link.inp is not None:
        m, q = members[0], queues[0]
        if not isinstance(m, Member):
            raise ProgramError("cascade: a host link's input goes to a conv, not a copy")
        if link.in_slots and link.slots:
            raise ProgramError("cascade: an input ring and an output ring on one link")
        c = m.conv.on_array()
        row = c.w * c.cin
        his, los = rows_read(m.conv, q.band_rows), rows_from(m.conv, q.band_rows)
        k = link.in_slots
        if k:
            runs = slot_runs(los, his, link.in_rows)
        else:  # one run in one slot: the whole input at its place
            runs, los = [(0, len(his) - 1)], [0] * len(his)
        span = (link.inp[1], link.inp[1] + c.h * row)
        for j, (b0, b1) in enumerate(runs):
            base = link.inp[1] + (j % k) * link.in_rows * row if k else link.inp[1]
            lo = got = los[b0]
            for b in range(b0, b1 + 1):
                edit = _Edit(load_shift=base - link.inp[1] - lo * row, span=span)
                if his[b] > got:
                    back = ("pop_next",) if k and b == b0 and j >= k else ()
                    xfers.append(make(Op.XFER, back + ("push_next",), to_host=0,
                                      host=link.inp[0] + got * row,
                                      pcache=base + (got - lo) * row,
                                      bytes=(his[b] - got) * row))
                    edit.load, got = ("pop_prev",), his[b]
                if k and b == b1 and j + k < len(runs):
                    edit.last_load = ("push_prev",)  # the slot may be filled again
                edits[(0, b)] = edit
    if link.out is not None:
        m, q = members[-1], queues[-1]
        h, w, ch = m.out_shape
        row, rows = w * ch, q.band_rows * m.phases  # tensor rows a step stores
        k, n = link.slots, q.bands
        if k and rows * row > link.slot:
            raise ProgramError(f"cascade: a step's {rows * row} B of output exceed the "
                               f"host link's {link.slot} B ring slot")
        for b in range(n):
            r0, r1 = b * rows, min((b + 1) * rows, h)
            at = link.out[0] + ((b % k) * link.slot if k else r0 * row)
            back = ("push_prev",) if k and b + k < n else ()
            xfers.append(make(Op.XFER, ("pop_prev",) + back, to_host=1,
                              host=link.out[1] + r0 * row, pcache=at, bytes=(r1 - r0) * row))
            edits[(len(members) - 1, b)] = _Edit(
                first_store=("pop_next",) if k and b >= k else (), last_store=("push_next",),
                shift=at - (link.out[0] + r0 * row))
    return xfers, edits


def _with(ins: Instr, flags: tuple[str, ...], shift: int = 0) -> Instr:
    fields = dict(ins.fields, dram=ins.dram + shift) if shift else ins.fields
    return Instr(ins.op, fields, ins.deps | set(flags))


def _edited(step: tuple[list[Instr], list[Instr], list[Instr]], edit: _Edit | None
            ) -> list[Instr]:
    load, comp, store = (list(x) for x in step)
    if edit is not None:
        if edit.load_shift:
            lo, hi = edit.span
            load = [_with(ins, (), edit.load_shift)
                    if ins.op == Op.LOAD and ins.kind == Kind.ACT and ins.space == Space.PCACHE
                    and lo <= ins.dram < hi else ins for ins in load]
        load[0] = _with(load[0], edit.load)
        load[-1] = _with(load[-1], edit.last_load)
        store = [_with(ins, (), edit.shift) for ins in store]
        store[0] = _with(store[0], edit.first_store)
        store[-1] = _with(store[-1], edit.last_store)
    return load + comp + store


def copy_queues(cfg: NpuConfig, m: Copy, rows: int,
                slots: list[tuple[int, int]] | None = None, reserve: int = 0,
                buffers: int = 2) -> ConvQueues:
    """``Copy``'s queues, in ``programs.conv_queues``' step protocol and buffer layout."""
    size = buffer_bytes(cfg, buffers)
    row = m.w * m.c
    nb = -(-m.h // rows)
    slots = [(g, nb) for g in range(nb)] if slots is None else slots
    band, _ = m.band_bytes(cfg, rows)
    tile_max = max(reserve, band)
    if tile_max + band > size:
        raise ProgramError(f"copy of {rows} rows of {row} B does not fit a {size} B buffer")
    load_q: list[Instr] = []
    comp_q: list[Instr] = []
    store_q: list[Instr] = []
    marks = []
    for (g, n), b in zip(slots, range(nb)):
        marks.append((len(load_q), len(comp_q), len(store_q)))
        r0, nr = b * rows, min(rows, m.h - b * rows)
        buf = (g % buffers) * size
        back = ("pop_next",) if g >= buffers else ()
        more = ("push_prev",) if g + buffers < n else ()
        load_q += act_loads(back, ("push_next",), m.src[0], m.src[1] + r0 * row, buf, nr, m.w,
                            m.c, row, (0, 0, 0, 0), 0)
        comp_q.append(make(Op.VEC, ("pop_prev",) + back + more + ("push_next",),
                           vop=VecOp.CLAMP, src=buf, dst=buf + tile_max, count=nr * row,
                           param=m.clamp))
        store_q.append(make(Op.STORE, ("pop_prev",) + more, space=m.dst[0],
                            dram=m.dst[1] + r0 * row, sram=buf + tile_max, rows=nr, cols=m.w,
                            depth=m.c, stride=row))
    return ConvQueues(load_q, comp_q, store_q, marks, nb, rows, 0, Dataflow.WS, 0, 0,
                      tile_max)


def band_rows(cfg: NpuConfig, members: list[Member | Copy], rows: list[int], buffers: int = 2
              ) -> tuple[list[int], int]:
    """Rows per band for each member (at most ``rows``) under one buffer layout, and the
    reserve: every member's outputs fit above the largest member's input band."""
    size = buffer_bytes(cfg, buffers)
    rows = list(rows)

    def tile(i: int) -> int:
        return members[i].band_bytes(cfg, rows[i])[0]

    def out(i: int) -> int:
        return members[i].band_bytes(cfg, rows[i])[1]

    for _ in range(64):
        reserve = max(tile(i) for i in range(len(members)))
        over = [i for i in range(len(members)) if reserve + out(i) > size]
        if not over:
            return rows, reserve
        # the largest input band shrinks first: that lowers the reserve for everyone
        big = max(range(len(members)), key=tile)
        i = big if rows[big] > 1 else over[0]
        if rows[i] == 1:
            raise ProgramError(f"cascade: member {i} does not fit a {size} B buffer beside a "
                               f"{reserve} B input band")
        rows[i] -= 1
    raise ProgramError("cascade: no bank layout found")


def rows_read(conv: Conv, rows: int) -> list[int]:
    """For each band of ``conv`` (``rows`` output rows each): one past the last input
    row it reads."""
    c = conv.on_array()
    return [min(c.h, (min(oy0 + rows, c.out_h) - 1) * c.sh + c.kh - c.pad[0])
            for oy0 in range(0, c.out_h, rows)]


def rows_from(conv: Conv, rows: int) -> list[int]:
    """For each band of ``conv`` (``rows`` output rows each): the first input row it
    reads."""
    c = conv.on_array()
    return [max(0, oy0 * c.sh - c.pad[0]) for oy0 in range(0, c.out_h, rows)]


def slot_runs(los: list[int], his: list[int], slot_rows: int) -> list[tuple[int, int]]:
    """(first, last) band of each run of consecutive bands whose input rows (band b reads
    rows ``los[b]`` to ``his[b]``) fit one ring slot of ``slot_rows`` rows."""
    runs: list[tuple[int, int]] = []
    b0 = 0
    for b in range(len(his)):
        if his[b] - los[b] > slot_rows:
            raise ProgramError(f"cascade: band {b} reads {his[b] - los[b]} input rows, more "
                               f"than an input ring slot's {slot_rows}")
        if his[b] - los[b0] > slot_rows:
            runs.append((b0, b - 1))
            b0 = b
    runs.append((b0, len(his) - 1))
    return runs


def needs(producer_rows: int, conv: Conv, rows: int) -> list[int]:
    """For each band of ``conv`` (``rows`` output rows each): the producer's step (of
    ``producer_rows`` rows each) that stores the last input row the band reads."""
    return [max(0, hi - 1) // producer_rows for hi in rows_read(conv, rows)]


BUBBLE = -1  # the member of a step that only passes the protocol's tokens on


def schedule(steps: list[int], deps: list[list[int]], dist: int = 4,
             frees: list[list[int]] | None = None) -> list[tuple[int, int]]:
    """(member, step) in program order. Member i's step b comes at least ``dist`` steps
    after member i - 1's step ``deps[i][b]``, and (``frees[i]`` not empty: its output's
    ring) after member i + 1's step ``frees[i][b]``; of the steps that may go next, the
    deepest member's goes, so rows move down the chain as soon as they can: a last
    conv that sends its output over the host link starts that transfer sooner and keeps
    it going (det 320's head cascade 169,885 -> 151,929 cycles against the member that
    went longest ago; the model 1,124,012 -> 1,106,493, det 640 3,796,600 -> 3,775,333,
    cls 180,903 -> 180,379); when none may, a ``BUBBLE`` step (empty DMAs carrying the
    tokens) fills the slot. (Choosing by estimated queue times was slower on PP-OCR's
    chains.)"""
    n = len(steps)
    frees = frees or [[] for _ in steps]
    idle = 0  # bubbles in a row: more than ``dist`` and no step will ever be ready
    nxt = [0] * n
    where: list[list[int | None]] = [[None] * k for k in steps]
    order: list[tuple[int, int]] = []
    left = sum(steps)

    while left:
        g = len(order)
        ready = []
        for i in range(n):
            b = nxt[i]
            if b >= steps[i]:
                continue
            at = where[i - 1][deps[i][b]] if i else -dist
            if at is not None and at + dist <= g and (not frees[i] or frees[i][b] < nxt[i + 1]):
                ready.append(i)
        if not ready:
            if (idle := idle + 1) > dist:
                raise ProgramError("cascade: its rings leave no step free to go")
            order.append((BUBBLE, 0))
            continue
        idle = 0
        pick = max(ready)
        where[pick][nxt[pick]] = g
        order.append((pick, nxt[pick]))
        nxt[pick] += 1
        left -= 1
    return order


def bubble_step(g: int, n: int, buffers: int) -> list[Instr]:
    """Step ``g`` of ``n`` with nothing to move or compute: zero-row DMAs and a CFG that pop
    and push the tokens a step would, so the steps around it keep their order."""
    more = ("push_prev",) if g + buffers < n else ()
    back = ("pop_next",) if g >= buffers else ()
    return [make(Op.LOAD, back + ("push_next",), kind=Kind.ACT, space=Space.PCACHE, rows=0),
            make(Op.CFG, ("pop_prev",) + back + more + ("push_next",)),
            make(Op.STORE, ("pop_prev",) + more, space=Space.PCACHE, rows=0)]


def cascade_queues(cfg: NpuConfig, members: list[Member | Copy], min_bands: int = 1,
                   buffers: int = 2) -> tuple[list[ConvQueues], list[tuple[int, int]]]:
    """Each member's queues with its steps numbered into the cascade's order over
    ``buffers`` buffers; a member without ``band_rows`` gets at least ``min_bands`` bands
    where its rows allow."""
    if len(members) < 2:
        raise ProgramError("a cascade needs at least two convs")
    for a, b in pairwise(members):
        if isinstance(b, Copy) or a.out_shape != (b.conv.h, b.conv.w, b.conv.cin):
            raise ProgramError(f"cascade: {b} does not read {a}'s output")
    default = []
    for m in members:
        if isinstance(m, Copy):
            default.append(m.rows)
            continue
        c = m.conv.on_array()
        default.append(m.band_rows or min(default_band_rows(cfg, m.conv, m.place),
                                          -(-c.out_h // min_bands)))
        if default[-1] > max_band_rows(cfg, c, residual=m.place.residual is not None):
            raise ProgramError(f"cascade: conv {m.conv}: {default[-1]} rows do not fit")
    for i, m in enumerate(members[:-1]):
        if isinstance(m, Member) and m.ring:
            # a step stores at most a quarter of the ring, a consumer band reads at most
            # half of it, so the two overlap
            n, c = _ring_rows(m), members[i + 1].conv.on_array()
            default[i] = min(default[i], max(1, n // 4 // m.phases))
            default[i + 1] = min(default[i + 1], max(1, (n // 2 - c.kh) // c.sh + 1))
    rows, reserve = band_rows(cfg, members, default, buffers)
    steps = [-(-m.out_h // r) for m, r in zip(members, rows)]
    # a producer step of r computed rows stores r * phases rows of the tensor read next
    deps = [[]] + [needs(rows[i - 1] * members[i - 1].phases, members[i].conv, rows[i])
                   for i in range(1, len(members))]
    order = schedule(steps, deps, distance(buffers), _frees(members, rows, _rings(members, rows)))
    slots: list[list[tuple[int, int]]] = [[] for _ in members]
    for g, (i, _) in enumerate(order):
        if i != BUBBLE:
            slots[i].append((g, len(order)))
    queues = [_queues(cfg, m, r, s, reserve, buffers) for m, r, s in zip(members, rows, slots)]
    return queues, order


def _queues(cfg: NpuConfig, m: Member | Copy, rows: int, slots: list[tuple[int, int]] | None,
            reserve: int, buffers: int) -> ConvQueues:
    if isinstance(m, Copy):
        return copy_queues(cfg, m, rows, slots, reserve, buffers)
    return conv_queues(cfg, m.conv, m.place, m.dataflow, m.lut, rows, "band", slots, reserve,
                       buffers)


def cascade_program(cfg: NpuConfig, members: list[Member | Copy], post: list | None = None,
                    min_bands: int = 1, buffers: int = 2, link: HostLink | None = None
                    ) -> list[Instr]:
    """One program (one SYNC) running ``members`` as a cascade; ``post``: per member, a
    function applied to its instructions (the layer's rounding); ``link``: its host
    transfers on the host queue."""
    queues, order = cascade_queues(cfg, members, min_bands, buffers)
    xfers, edits = _link_steps(members, queues, link) if link else ([], {})
    rings = _rings(members, [q.band_rows for q in queues])
    spans = {i + 1: (r.base, r.base + int(np.prod(members[i].out_shape)))
             for i, r in rings.items()}
    prog: list[Instr] = [make(Op.SYNC), *xfers]
    for g, (i, b) in enumerate(order):
        if i == BUBBLE:
            prog += bubble_step(g, len(order), buffers)
            continue
        step = queues[i].step(b)
        if i in rings or i in spans:
            step = _through_rings(step, rings.get(i), rings.get(i - 1), spans.get(i, (0, 0)))
        part = _edited(step, edits.get((i, b)))
        prog += post[i](part) if post and post[i] else part
    return prog


__all__ = [
    "HostLink",
    "Member",
    "band_rows",
    "cascade_program",
    "cascade_queues",
    "distance",
    "needs",
    "rows_from",
    "rows_read",
    "schedule",
    "slot_runs",
]
