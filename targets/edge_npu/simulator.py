"""edge-npu simulator: four in-order queues linked by dependence tokens.

The instruction stream is dispatched by opcode to the load, compute, store and host
queues (as VTA's fetch unit does; the host queue, XFER, is edge-npu's own). An instruction starts when its queue is free and the
tokens it pops have been pushed; it ends ``cost`` cycles later and then pushes its
tokens. Issue follows simulated time, so the functional state evolves in the order
the hardware would see. SYNC is a barrier across all queues that also pays the layer
launch cost; END ends the program.

The compute queue drives two units, the array (CFG, GEMM) and the vector unit (VEC).
With a vector command queue (config ``vector.queue`` > 0) the compute queue dispatches
a VEC in one cycle, waiting only while that queue is full, and goes on: VECs run in
order on the vector unit, a GEMM waits only for queued or running VECs it conflicts
with (``hazards``), and a token the compute queue pushes is pushed once every VEC
before it has finished, so the load and store queues see the same order as without
overlap. With ``vector.queue`` 0 (VTA's model) a VEC holds the compute queue for its
whole cost. Token queues must be empty at each SYNC and at
END, and a state where no queue can issue is a deadlock; both raise ``SimError``.

Time = host-link invoke overhead + device cycles (the critical path through the
queues) at the config's clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import hazards, timing
from .config import NpuConfig
from .energy import Energy, energy
from .isa import Dataflow, Instr, Kind, Op, Space
from .races import RaceChecker, footprint
from .semantics import Memory, SimError, execute

QUEUES = ("load", "compute", "store", "host")
VEC_DISPATCH_CYCLES = 1  # compute-queue cycles to hand a VEC to the vector unit
# the queues' ring (``isa``): host -> load -> compute -> store -> host
PREV = {"load": "host", "compute": "load", "store": "compute", "host": "store"}
NEXT = {"load": "compute", "compute": "store", "store": "host", "host": "load"}


@dataclass
class Report:
    """What one run of a program cost."""

    config: str
    link: str
    cycles: int = 0
    invoke_cycles: int = 0
    seconds: float = 0.0
    macs: int = 0
    utilization: float = 0.0
    gemm_cycles: int = 0
    folds: int = 0
    # cycles each queue was occupied, and the vector unit's own (with a vector queue the
    # compute queue is occupied one dispatch cycle per VEC)
    busy: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUEUES + ("vector",), 0))
    sram_peak: dict[str, int] = field(default_factory=dict)
    sram_traffic: int = 0
    host_in: int = 0
    host_out: int = 0
    streamed_weights: int = 0
    cached_weights: int = 0
    instructions: int = 0
    energy: Energy | None = None
    # per SYNC-delimited section (one layer each in generated programs): cycles
    # including the launch, MACs, SRAM and host-link bytes, energy in J
    sections: list[dict[str, float]] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return self.seconds * 1e3

    def summary(self) -> str:
        e = self.energy.total_j * 1e3 if self.energy else 0.0
        return (f"{self.config} ({self.link}): {self.cycles} cycles + invoke "
                f"{self.invoke_cycles} = {self.ms:.3f} ms, MAC util {self.utilization:.1%}, "
                f"host in/out {self.host_in}/{self.host_out} B (weights cached "
                f"{self.cached_weights} B, streamed {self.streamed_weights} B), "
                f"SRAM traffic {self.sram_traffic} B, energy {e:.3f} mJ")


def instr_cycles(cfg: NpuConfig, ins: Instr) -> int:
    """Cycles an instruction occupies its queue."""
    if ins.op in (Op.LOAD, Op.STORE):
        return timing.dma_cycles(cfg, ins)
    if ins.op == Op.XFER:
        return timing.xfer_cycles(cfg, ins)
    if ins.op == Op.GEMM:
        return timing.gemm_cycles(cfg, ins)
    if ins.op == Op.VEC:
        return timing.vec_cycles(cfg, ins)
    if ins.op == Op.CFG:
        return cfg.config_cycles
    return 0


def _segments(program: list[Instr]) -> list[tuple[int, list[tuple[int, Instr]]]]:
    """Split at SYNC; each segment is (index of its SYNC or -1, [(index, instr)])."""
    if not program or program[-1].op != Op.END:
        raise SimError("program does not end with END")
    segs: list[tuple[int, list[tuple[int, Instr]]]] = [(-1, [])]
    for idx, ins in enumerate(program[:-1]):
        if ins.op == Op.END:
            raise SimError(f"instruction #{idx} END is not the last instruction")
        if ins.op == Op.SYNC:
            segs.append((idx, []))
        else:
            segs[-1][1].append((idx, ins))
    return segs


class Simulator:
    """Runs programs on one machine; ``functional=False`` keeps only the timing."""

    def __init__(self, cfg: NpuConfig, host_bytes: int = 1 << 20, functional: bool = True,
                 trace: list[tuple[int, str, int, int]] | None = None,
                 check_races: bool = True):
        self.cfg = cfg
        self.functional = functional
        # functional runs refuse programs whose result depends on the timing (``races``)
        self.check_races = functional and check_races
        self.races: RaceChecker | None = None
        # (instruction index, unit, start, end) of every instruction, when a list is given
        self.trace = trace
        self.mem = Memory.create(cfg, host_bytes)

    def run(self, program: list[Instr], cached_weights: int = 0) -> Report:
        cfg = self.cfg
        rep = Report(cfg.name, cfg.link.name, cached_weights=cached_weights,
                     instructions=len(program))
        now = 0
        if self.check_races:
            self.races = RaceChecker(self.mem.inp.size, self.mem.acc.size,
                                     self.mem.pcache.size, self.mem.host.size)
        segs = _segments(program)
        bounds = [s for s, _ in segs[1:]] + [len(program) - 1]
        for (sync_idx, seg), boundary in zip(segs, bounds):
            t0, before = now, (rep.macs, rep.sram_traffic, rep.host_in + rep.host_out)
            if sync_idx >= 0:
                now += cfg.layer_launch_cycles
            where = f"#{boundary} {program[boundary].op.name}"
            now = self._segment(seg, now, rep, where)
            if seg:
                macs, sram, host = (a - b for a, b in zip(
                    (rep.macs, rep.sram_traffic, rep.host_in + rep.host_out), before))
                rep.sections.append({
                    "cycles": now - t0, "macs": macs, "sram_bytes": sram, "host_bytes": host,
                    "energy_j": energy(cfg, macs, sram, host,
                                       (now - t0) / cfg.clock_hz).total_j})
        rep.cycles = now
        rep.invoke_cycles = cfg.invoke_cycles
        rep.seconds = (now + rep.invoke_cycles) / cfg.clock_hz
        rep.utilization = rep.macs / (now * cfg.peak_macs_per_cycle) if now else 0.0
        rep.sram_peak = dict(self.mem.peak)
        rep.energy = energy(cfg, rep.macs, rep.sram_traffic,
                            rep.host_in + rep.host_out, rep.seconds)
        return rep

    def _segment(self, seg: list[tuple[int, Instr]], start: int, rep: Report,
                 boundary: str) -> int:
        cfg = self.cfg
        queues = {q: deque(item for item in seg if item[1].queue == q) for q in QUEUES}
        if queues["host"] and any(ins.op in (Op.LOAD, Op.STORE) and ins.space == Space.HOST
                                  for _, ins in seg):
            # one link: its bandwidth is the host queue's or the DMAs', not both at once
            raise SimError(f"section ending at {boundary}: XFERs and LOAD / STORE over the "
                           "host link in one section")
        free = dict.fromkeys(QUEUES, start)
        tokens: dict[tuple[str, str], deque[int]] = {
            (a, b): deque() for a in QUEUES for b in (PREV[a], NEXT[a]) if b}

        def pops(q: str, ins: Instr) -> list[tuple[str, str]]:
            need = []
            if "pop_prev" in ins.deps:
                need.append((PREV[q], q))
            if "pop_next" in ins.deps:
                need.append((NEXT[q], q))
            return need

        races = self.races
        if races is not None:
            races.sync()  # a SYNC (or the start) orders everything before it
        tok_vc: dict[tuple[str, str], deque] = {t: deque() for t in tokens}
        vec_hist: list[tuple[object, hazards.Footprint]] = []  # VECs' clocks, footprints
        depth = cfg.vector_queue
        vec_free = start   # when the vector unit has finished every VEC dispatched so far
        vec_starts: deque[int] = deque(maxlen=max(depth, 1))  # the last ``depth`` VECs' starts
        inflight: list[tuple[int, hazards.Footprint]] = []
        regs: dict | None = None  # the last CFG, for GEMM footprints
        fps: dict[int, hazards.Footprint] = {}  # GEMM / VEC footprints, once each

        def footprint_of(idx: int, ins: Instr) -> hazards.Footprint:
            fp = fps.get(idx)
            if fp is None:
                fp = fps[idx] = (hazards.vec_footprint(ins) if ins.op == Op.VEC
                                 else hazards.gemm_footprint(ins, regs))
            return fp

        def ready(q: str, idx: int, ins: Instr, t: int) -> int:
            """Earliest start on the units, given queue and token time ``t``."""
            if q != "compute" or not depth:
                return t
            if ins.op == Op.VEC:  # dispatch: a slot in the vector queue
                return max(t, vec_starts[0]) if len(vec_starts) == depth else t
            if ins.op == Op.GEMM and inflight:
                fp = footprint_of(idx, ins)
                return max([t] + [end for end, v in inflight if hazards.gemm_must_wait(v, fp)])
            return t

        while any(queues.values()):
            best = None
            for q in QUEUES:
                if not queues[q]:
                    continue
                idx, ins = queues[q][0]
                need = pops(q, ins)
                if all(tokens[t] for t in need):
                    t0 = ready(q, idx, ins, max([free[q]] + [tokens[t][0] for t in need]))
                    if best is None or t0 < best[0]:
                        best = (t0, q, need)
            if best is None:
                waits = []
                for q in QUEUES:
                    if queues[q]:
                        idx, ins = queues[q][0]
                        missing = [a for a, _ in pops(q, ins) if not tokens[(a, q)]]
                        waits.append(f"{q} queue at #{idx} {ins.op.name} waits for a "
                                     f"token from {' and '.join(missing)}")
                raise SimError("deadlock: " + "; ".join(waits))
            t0, q, need = best
            idx, ins = queues[q].popleft()
            for t in need:
                tokens[t].popleft()
            cost = instr_cycles(cfg, ins)
            end = t0 + cost
            # footprints serve the race check and the vector queue's hazard list only
            wanted = races is not None or (depth and ins.op == Op.VEC)
            fp = footprint_of(idx, ins) if wanted and ins.op in (Op.GEMM, Op.VEC) else None
            fps.pop(idx, None)
            if races is not None:
                self._order(races, q, ins, idx, [tok_vc[t].popleft() for t in need],
                            vec_hist, depth, fp)
            self._account(ins, idx, rep, cost)
            unit_start = t0
            if ins.op == Op.CFG:
                regs = dict(ins.fields)
            if q == "compute" and depth:
                inflight = [(e, v) for e, v in inflight if e > t0]
                if ins.op == Op.VEC:
                    unit_start = max(t0, vec_free)
                    vec_starts.append(unit_start)
                    vec_free = unit_start + cost
                    assert fp is not None
                    inflight.append((vec_free, fp))
                    rep.busy["vector"] += cost
                    cost, end = VEC_DISPATCH_CYCLES, t0 + VEC_DISPATCH_CYCLES
            if self.trace is not None:
                unit = "vector" if q == "compute" and ins.op == Op.VEC else q
                self.trace.append((idx, unit, unit_start,
                                   vec_free if unit == "vector" and depth else end))
            free[q] = end
            rep.busy[q] += cost
            # a compute-queue token also vouches for every VEC dispatched before it
            pushed = max(end, vec_free) if q == "compute" else end
            for flag, other in (("push_prev", PREV[q]), ("push_next", NEXT[q])):
                if flag in ins.deps:
                    tokens[(q, other)].append(pushed)
                    if races is not None:
                        clock = races.clock(q)
                        if q == "compute":
                            clock = np.maximum(clock, races.clock("vector"))
                        tok_vc[(q, other)].append(clock)
        left = {f"{a}->{b}": len(v) for (a, b), v in tokens.items() if v}
        if left:
            raise SimError(f"token misuse: token(s) pushed but never popped before "
                           f"{boundary}: {left}")
        return max([*free.values(), vec_free])

    def _order(self, races: RaceChecker, q: str, ins: Instr, idx: int, popped: list,
               vec_hist: list, depth: int, fp: hazards.Footprint | None) -> None:
        """Happens-before bookkeeping and the race check of one instruction (``races``);
        ``fp``: a GEMM's or VEC's footprint."""
        for clock in popped:
            races.join(q, clock)
        agent = q
        if q == "compute" and depth:
            if ins.op == Op.VEC:  # dispatched in order, after the array's earlier work
                agent = "vector"
                races.join(agent, races.clock("compute"))
            elif fp is not None:  # a GEMM: the hazard unit orders it after conflicting VECs
                for clock, v in reversed(vec_hist):
                    if hazards.gemm_must_wait(v, fp):
                        races.join(agent, clock)
                        break
        races.step(agent)  # this instruction's epoch; tokens it pushes carry it
        where = f"instruction #{idx} {ins.op.name}"
        for mem, lo, hi, write in footprint(ins, fp, self.mem):
            races.access(agent, mem, lo, hi, write, idx, where)
        if agent == "vector":
            vec_hist.append((races.clock(agent), fp))

    def _account(self, ins: Instr, idx: int, rep: Report, cost: int) -> None:
        if self.functional:
            rep.sram_traffic += execute(self.mem, ins, idx)
        if ins.op == Op.GEMM:
            rep.macs += ins.m_len * ins.k_len * ins.n_len
            rep.gemm_cycles += cost
            rep.folds += 0 if ins.chain else 1
        elif ins.op == Op.XFER:
            if ins.to_host:
                rep.host_out += ins.bytes
            else:
                rep.host_in += ins.bytes
        elif ins.op in (Op.LOAD, Op.STORE) and ins.space == Space.HOST:
            n = timing.dma_bytes(ins)
            if ins.op == Op.STORE:
                rep.host_out += n
            else:
                rep.host_in += n
                if ins.kind != Kind.ACT:
                    rep.streamed_weights += n


def simulate(cfg: NpuConfig, program: list[Instr], functional: bool = False,
             cached_weights: int = 0) -> Report:
    """Timing (and optionally functional) run on a fresh machine."""
    return Simulator(cfg, functional=functional).run(program, cached_weights)


__all__ = ["Dataflow", "Report", "SimError", "Simulator", "instr_cycles", "simulate"]
