"""The edge-npu tuner: per conv / GEMM layer, search the mapping (dataflow, output rows
per band, loop order) with the simulator's timing model as the measurement and an
XGBoost cost model ranking the candidates still to measure.

Tasks are the distinct ``workload_key`` s of a lowered model (a layer that occurs
several times is one task, weighted by its count). Each task's default mapping is
measured first; then every round fits the cost model (log cycles from shape and mapping
features) on all measurements so far and measures, for the tasks with the most cycles
to gain, the candidate it ranks best (sometimes a random one, so a wrong model still
explores). A measurement is a timing-only simulation of the layer's program at its
places (host link or parameter cache), the same figure the placement report gives.

The database is a folder with ``edge_npu.jsonl``: one JSON record per measurement,
appended with a single ``write`` + ``fsync`` (a run killed with ``kill -9`` loses at
most the line being written; a torn last line is skipped on reading and terminated
before the next append), so tuning resumes where it stopped. ``load_mappings`` gives
the best mapping per workload for ``build --tuning-db``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgec.errors import EdgecError

from . import programs
from .config import NpuConfig, load_config
from .isa import IsaError, Space
from .lower import model_cycles
from .mapping import LOOP_ORDERS, Mapping
from .programs import Conv, Placement, ProgramError, align
from .simulator import simulate

DB_FILE = "edge_npu.jsonl"
VERSION = 1


# -- tasks and candidates ------------------------------------------------------------------
@dataclass
class Task:
    """One distinct conv / GEMM / global-pool workload of a model."""

    key: str
    conv: Conv
    kind: str
    inp: Space
    out: Space
    streamed: bool
    lut: bool
    scale: bool = False
    residual: bool = False
    residual_in: Space | None = None  # where a fused residual lives (None: the input's space)
    count: int = 1
    names: list[str] = field(default_factory=list)

    @property
    def residual_space(self) -> Space:
        """Where a fused residual lives."""
        return self.inp if self.residual_in is None else self.residual_in

    @staticmethod
    def from_key(key: str) -> Task:
        d = json.loads(key)
        c = dict(d["conv"])
        c["pad"] = tuple(c["pad"])
        res = d.get("residual", False)
        return Task(key, Conv(**c), d["kind"], Space[d["in"].upper()], Space[d["out"].upper()],
                    d["streamed"], d["lut"], d.get("scale", False), bool(res),
                    Space[res.upper()] if isinstance(res, str) else None)


def tasks_of(model: Any) -> list[Task]:
    """The tunable workloads of a lowered ``NpuModel`` (first-seen order)."""
    found: dict[str, Task] = {}
    for seg in model.segments:
        for ly in seg.layers:
            key = ly.get("workload")
            if key is None:
                continue
            if key not in found:
                found[key] = Task.from_key(key)
            found[key].names.append(ly["name"])
    for t in found.values():
        t.count = len(t.names)
    return list(found.values())


def candidates(cfg: NpuConfig, task: Task) -> list[Mapping]:
    """Every mapping the generator accepts for ``task``: dataflow x band rows (each
    distinct band count) x loop order (tile order only with several N-tiles)."""
    conv = task.conv.on_array()
    try:
        most = programs.max_band_rows(cfg, conv, scale=task.scale, residual=task.residual)
    except ProgramError:
        return []
    oh = task.conv.out_h
    rows = sorted({math.ceil(oh / nb) for nb in range(1, oh + 1)} & set(range(1, most + 1)))
    tiles = len(programs.n_tiles(conv, cfg.cols))
    orders = LOOP_ORDERS if tiles > 1 else LOOP_ORDERS[:1]
    return [Mapping(df, r, o) for df in ("ws", "os") for r in rows for o in orders]


def resolved_default(cfg: NpuConfig, task: Task) -> Mapping:
    """The mapping the generator picks with no tuning, spelled out."""
    lp = _program(cfg, task, Mapping())
    return Mapping(lp.dataflow.name.lower(), lp.notes["band_rows"], "band")


def _program(cfg: NpuConfig, task: Task, mp: Mapping) -> programs.LayerProgram:
    conv = task.conv.on_array()  # the sizes of what the array reads and writes
    in_bytes = conv.h * conv.w * conv.cin
    out_addr = align(in_bytes)
    wgt = out_addr + align(conv.out_h * conv.out_w * conv.cout)
    params = wgt + align(conv.kh * conv.kw * conv.cin * conv.cout)
    lut = params + align(16 * (3 + 3 * conv.cout)) if task.lut else None
    # a fused scale's operand in the input's space and a residual in its own, past the
    # parameter blocks (timing only: sizes and spaces matter, not contents)
    extra = params + 2 * align(16 * (3 + 3 * conv.cout))
    scale = ((task.inp, extra), params) if task.scale else None
    residual = ((task.residual_space, extra + align(conv.cin)), params) if (
        task.residual) else None
    if task.kind == "gap":  # the ones row is the input, the activation the weights
        place = Placement(inp=(Space.PCACHE, params), out=(task.out, out_addr), wgt=0,
                          params=params + 4096)
    else:
        place = Placement(inp=(task.inp, 0), out=(task.out, out_addr), wgt=wgt, params=params,
                          stream_from=(out_addr + conv.out_h * conv.out_w * conv.cout
                                       if task.streamed else None), scale=scale,
                          residual=residual)
    return programs.conv2d_layer(cfg, task.conv, place, mp.dataflow, lut=lut,
                                 band_rows=mp.band_rows, order=mp.order or "band")


def measure(cfg: NpuConfig, task: Task, mp: Mapping) -> tuple[int | None, str | None]:
    """(cycles, None) of ``mp`` on ``task`` by timing-only simulation, or (None, why)."""
    try:
        lp = _program(cfg, task, mp)
        return simulate(cfg, lp.instrs + programs.end()).cycles, None
    except (ProgramError, IsaError) as exc:
        return None, str(exc)


# -- cost model -----------------------------------------------------------------------------
def features(cfg: NpuConfig, task: Task, mp: Mapping) -> list[float]:
    """Shape and mapping features; the fold counts and fill costs are what the array
    time follows, band counts what the overlap and per-band costs follow."""
    c = task.conv.on_array()
    df = mp.dataflow or "ws"
    rows = mp.band_rows or 1
    nb = math.ceil(c.out_h / rows)
    m = rows * c.out_w
    tiles = programs.n_tiles(c, cfg.cols)
    k = programs.tile_k(c, tiles[0][1])
    if df == "ws":
        folds = nb * len(tiles) * math.ceil(k / cfg.rows)
        fold_t = m
        fill = 2 * cfg.rows + cfg.cols - 2
    else:
        folds = nb * len(tiles) * math.ceil(m / cfg.rows)
        fold_t = k
        fill = cfg.rows + cfg.cols - 2
    tile_order = (mp.order or "band") == "tile"
    loads = nb * (len(tiles) if tile_order else 1)
    return [math.log2(1 + v) for v in (c.h, c.w, c.cin, c.cout, c.out_h * c.out_w, k, m,
                                       folds, fold_t, folds * (fold_t + fill), loads)] + [
        c.kh, c.stride, c.sh, float(c.depthwise), float(task.inp == Space.HOST),
        float(task.out == Space.HOST), float(task.streamed), float(task.lut),
        float(task.scale), float(task.residual),
        float(task.residual and task.residual_space == Space.HOST),
        float(df == "os"), float(tile_order), float(task.kind == "gap"), nb, len(tiles)]


class CostModel:
    """XGBoost regression of log cycles; before enough data, the fold-cycle estimate."""

    MIN_RECORDS = 16

    def __init__(self, seed: int = 0) -> None:
        self.model: Any = None
        self.seed = seed

    def fit(self, x: list[list[float]], y: list[int]) -> None:
        if len(y) < self.MIN_RECORDS:
            self.model = None
            return
        import xgboost as xgb

        # xgboost's core API: its sklearn wrapper needs scikit-learn, which edgec does not.
        data = xgb.DMatrix(np.asarray(x), label=np.log(np.asarray(y, dtype=np.float64)))
        params = {"max_depth": 5, "eta": 0.2, "nthread": 1, "seed": self.seed,
                  "verbosity": 0, "objective": "reg:squarederror"}
        self.model = xgb.train(params, data, num_boost_round=60)

    def predict(self, x: list[list[float]]) -> np.ndarray:
        arr = np.asarray(x)
        if self.model is None:  # log2(1 + folds * (T + fill)): feature 9
            return arr[:, 9]
        import xgboost as xgb

        return np.asarray(self.model.predict(xgb.DMatrix(arr)))


# -- database ---------------------------------------------------------------------------------
class Database:
    """Append-only JSON-lines records in ``folder/edge_npu.jsonl``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_FILE

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill during its write
            if isinstance(rec, dict) and rec.get("v") == VERSION and "key" in rec:
                out.append(rec)
        return out

    def append(self, rec: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = (json.dumps({"v": VERSION, **rec}, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        data = b"\n" + data  # end a torn line so this record parses
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def load_mappings(db_dir: str | os.PathLike[str], config: str | None = None
                  ) -> dict[str, Mapping]:
    """Best measured mapping per workload key (of ``config`` if given)."""
    best: dict[str, tuple[int, Mapping]] = {}
    for rec in Database(db_dir).records():
        cyc = rec.get("cycles")
        if cyc is None:
            continue
        try:
            if config is not None and json.loads(rec["key"]).get("config") != config:
                continue
        except (json.JSONDecodeError, AttributeError, TypeError):
            continue
        mp = _valid_mapping(rec.get("mapping"))
        if mp is None or not isinstance(cyc, int):
            continue  # a hand-edited or foreign record
        if rec["key"] not in best or cyc < best[rec["key"]][0]:
            best[rec["key"]] = (cyc, mp)
    return {k: mp for k, (_, mp) in best.items()}


def _valid_mapping(d: Any) -> Mapping | None:
    if not isinstance(d, dict):
        return None
    mp = Mapping.from_json(d)
    if mp.dataflow not in (None, "ws", "os") or mp.order not in (None, *LOOP_ORDERS):
        return None
    if mp.band_rows is not None and (not isinstance(mp.band_rows, int) or mp.band_rows < 1):
        return None
    return mp


# -- the search -------------------------------------------------------------------------------
@dataclass
class TaskResult:
    key: str
    names: list[str]
    count: int
    default_cycles: int
    best_cycles: int
    best: dict[str, Any]
    measured: int
    candidates: int = 0  # mappings the generator accepts for this workload


@dataclass
class NpuTuneResult:
    db_dir: Path
    config: str
    tasks: int = 0
    trials: int = 0
    resumed_trials: int = 0
    seconds: float = 0.0
    default_cycles: int = 0  # whole model, default mappings (NPU segments)
    tuned_cycles: int = 0    # whole model, best mappings in the database
    per_task: list[TaskResult] = field(default_factory=list)
    unsearched: int = 0  # workloads with candidate mappings not yet measured

    @property
    def speedup(self) -> float:
        return self.default_cycles / self.tuned_cycles if self.tuned_cycles else 0.0

    def as_json(self) -> dict[str, Any]:
        return {"db_dir": str(self.db_dir), "config": self.config, "tasks": self.tasks,
                "trials": self.trials, "resumed_trials": self.resumed_trials,
                "seconds": self.seconds, "default_cycles": self.default_cycles,
                "tuned_cycles": self.tuned_cycles, "speedup": self.speedup,
                "unsearched": self.unsearched,
                "per_task": [vars(t) for t in self.per_task]}

    def to_text(self, top: int = 10) -> str:
        lines = [(f"edge-npu tuning ({self.config}): {self.tasks} layer workloads, "
                  f"{self.trials} trials this run ({self.resumed_trials} already in "
                  f"{self.db_dir}), {self.seconds:.1f} s"),
                 (f"  whole model: default {self.default_cycles:,} cycles -> tuned "
                  f"{self.tuned_cycles:,} ({self.speedup:.3f}x)")]
        if self.unsearched:
            lines.append(f"  {self.unsearched} of {self.tasks} workloads have mappings not yet "
                         "measured: more --trials searches them")
        better = [t for t in self.per_task if t.best_cycles < t.default_cycles]
        if not better:
            lines.append("  no layer beat its default mapping")
            return "\n".join(lines)
        lines.append("  most improved layers: default -> tuned cycles (x count), mapping")
        better.sort(key=lambda t: -(t.default_cycles - t.best_cycles) * t.count)
        for t in better[:top]:
            lines.append(f"    {t.names[0]:<14} {t.default_cycles:>9,} -> {t.best_cycles:>9,} "
                         f"(x{t.count}) {t.best}")
        return "\n".join(lines)


def search(cfg: NpuConfig, tasks: list[Task], db: Database, trials: int,
           seed: int = 0, explore: float = 0.2, progress: bool = False) -> tuple[int, int]:
    """Measure until the database holds ``trials`` measurements of these tasks (or every
    candidate is measured); returns (measured now, measured before)."""
    rng = random.Random(seed)
    keys = {t.key for t in tasks}
    seen: dict[str, dict[str, int | None]] = {t.key: {} for t in tasks}
    for rec in db.records():
        if rec["key"] in keys:
            seen[rec["key"]][_mkey(rec["mapping"])] = rec.get("cycles")
    before = sum(len(v) for v in seen.values())
    done = before
    cands = {t.key: candidates(cfg, t) for t in tasks}

    def run(task: Task, mp: Mapping, default: bool = False) -> None:
        nonlocal done
        cyc, err = measure(cfg, task, mp)
        rec: dict[str, Any] = {"key": task.key, "mapping": mp.to_json(), "cycles": cyc}
        if err:
            rec["error"] = err
        if default:
            rec["default"] = True
        db.append(rec)
        seen[task.key][_mkey(mp.to_json())] = cyc
        done += 1

    # the defaults first, so every task has its baseline
    for t in tasks:
        if done >= trials:
            break
        d = resolved_default(cfg, t)
        if _mkey(d.to_json()) not in seen[t.key]:
            run(t, d, default=True)
    model = CostModel(seed)
    while done < trials:
        todo = {t.key: [m for m in cands[t.key] if _mkey(m.to_json()) not in seen[t.key]]
                for t in tasks}
        live = [t for t in tasks if todo[t.key]]
        if not live:
            break
        x, y = [], []
        by_key = {t.key: t for t in tasks}
        for k, measured in seen.items():
            for mk, cyc in measured.items():
                if cyc is not None:
                    x.append(features(cfg, by_key[k], Mapping.from_json(json.loads(mk))))
                    y.append(cyc)
        model.fit(x, y)
        # tasks ordered by the cycles they still spend (best so far x count)
        live.sort(key=lambda t: -_best(seen[t.key]) * t.count)
        batch = max(1, min(len(live), trials - done))
        for t in live[:batch]:
            if done >= trials:
                break
            opts = todo[t.key]
            if rng.random() < explore:
                pick = rng.choice(opts)
            else:
                pred = model.predict([features(cfg, t, m) for m in opts])
                pick = opts[int(np.argmin(pred))]
            run(t, pick)
        if progress:
            print(f"\r  {done}/{trials} trials", end="", flush=True)
    if progress:
        print()
    return done - before, before


def _mkey(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True)


def _best(measured: dict[str, int | None]) -> int:
    vals = [c for c in measured.values() if c is not None]
    return min(vals) if vals else 0


def tune_offload(mod: Any, config: str | NpuConfig, db_dir: str | os.PathLike[str],
                 trials: int, seed: int = 0, progress: bool = False) -> NpuTuneResult:
    """Tune the NPU layers of a (QDQ) Relax module; report default vs tuned whole-model
    cycles (every NPU segment simulated once with each set of mappings)."""
    from .offload import partition_and_lower

    cfg = load_config(config) if isinstance(config, str) else config
    t0 = time.perf_counter()
    _, model = partition_and_lower(mod, cfg)
    tasks = tasks_of(model)
    if not tasks:
        raise EdgecError("edgec tune: no conv or matmul layer runs on the NPU (give a QDQ "
                         "int8 model, or --quantize int8 --calib DATA)")
    db = Database(db_dir)
    now, before = search(cfg, tasks, db, trials, seed, progress=progress)
    mappings = load_mappings(db_dir, cfg.name)
    _, tuned = partition_and_lower(mod, cfg, None, mappings)
    res = NpuTuneResult(Path(db_dir), cfg.name, len(tasks), now, before,
                        time.perf_counter() - t0, model_cycles(cfg, model),
                        model_cycles(cfg, tuned))
    recs: dict[str, list[dict[str, Any]]] = {}
    for rec in db.records():
        recs.setdefault(rec["key"], []).append(rec)
    for t in tasks:
        ok = [r for r in recs.get(t.key, []) if r.get("cycles") is not None]
        n_cands = len(candidates(cfg, t))
        res.unsearched += len(recs.get(t.key, [])) < n_cands
        if not ok:
            continue
        dflt = _mkey(resolved_default(cfg, t).to_json())
        d = next((r["cycles"] for r in ok if _mkey(r["mapping"]) == dflt), None)
        b = min(ok, key=lambda r: r["cycles"])
        res.per_task.append(TaskResult(t.key, t.names, t.count,
                                       d if d is not None else b["cycles"], b["cycles"],
                                       b["mapping"], len(ok), n_cands))
    return res


def tune_model(model_path: str | os.PathLike[str], target: str, db_dir: str | os.PathLike[str],
               trials: int, *, input_shapes: dict[str, tuple[int, ...]] | None = None,
               quantize: str | None = None, calib: str | None = None, seed: int = 0,
               progress: bool = False) -> NpuTuneResult:
    """``edgec tune MODEL --target edge-npu``: import as ``build`` does, then tune."""
    from edgec.driver import import_model
    from edgec.targets import get_target

    from .target import config_of

    if trials <= 0:
        raise EdgecError("edgec tune: --trials must be positive")
    desc = get_target(target)
    imp = import_model(model_path, desc, input_shapes=input_shapes, quantize=quantize,
                       calib=calib)
    return tune_offload(imp.mod, config_of(desc), db_dir, trials, seed, progress)


def cmd_tune_npu(args: Any) -> int:
    """``edgec tune MODEL --target edge-npu ...`` (called by ``cli_tune.cmd_tune``)."""
    from edgec.shapes import parse_input_shapes

    if args.trials is None:
        raise EdgecError("edgec tune --target edge-npu needs --trials N")
    if bool(args.quantize) != bool(args.calib):
        raise EdgecError("--quantize int8 and --calib go together")
    res = tune_model(args.model, args.target, args.db, args.trials,
                     input_shapes=parse_input_shapes(args.input_shape),
                     quantize=args.quantize, calib=args.calib,
                     progress=not (args.quiet or args.json))
    print(json.dumps(res.as_json(), indent=2) if args.json else res.to_text())
    return 0


__all__ = [
    "CostModel",
    "Database",
    "NpuTuneResult",
    "Task",
    "candidates",
    "cmd_tune_npu",
    "features",
    "load_mappings",
    "measure",
    "model_cycles",
    "resolved_default",
    "search",
    "tasks_of",
    "tune_model",
    "tune_offload",
]
