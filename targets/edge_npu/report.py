"""The placement report, in the manner of the Edge TPU compiler's log.

What runs where (each CPU op with its reason), the share of MACs on the NPU, the
parameter cache (params, cached and streamed weight bytes), per-layer cycles and MAC
utilization, and per inference: device cycles, latency at the clock (with one host
invoke per segment call), host-link bytes and energy. The figures come from running
each segment once on the simulator (data does not change timing, traffic or energy).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from . import programs, timing
from .config import NpuConfig
from .isa import Dataflow, Space
from .lower import NpuModel
from .partition import FLOAT_REASON, Partition, _bindings
from .programs import Conv
from .tuner import Task
from .tvm_compat import shape_of


def _cpu_macs(part: Partition) -> dict[str, int]:
    """MACs of conv2d / conv2d_transpose / matmul ops left on the CPU, by var name."""
    from tvm import relax

    out = {}
    for b in _bindings(part.mod["main"]):
        v = b.value
        if not isinstance(v, relax.Call):
            continue
        op = getattr(v.op, "name", "")
        if op == "relax.nn.conv2d":
            o = shape_of(b.var)
            w = shape_of(v.args[1])
            out[str(b.var.name)] = int(np.prod(o)) * int(np.prod(w[1:]))
        elif op == "relax.nn.conv2d_transpose":  # weight IOHW: each input pixel x (O/g)HW
            w = shape_of(v.args[1])
            out[str(b.var.name)] = int(np.prod(shape_of(v.args[0]))) * int(np.prod(w[1:]))
        elif op == "relax.matmul":
            o = shape_of(b.var)
            k = shape_of(v.args[0])[-1]
            out[str(b.var.name)] = int(np.prod(o)) * k
    return out


def roofline(cfg: NpuConfig, info: dict[str, Any]) -> dict[str, Any] | None:
    """What bounds a conv / GEMM layer, for the report.

    Compute-bound means the layer's arithmetic intensity is above the machine balance
    for where its data lives: at peak (R x C MACs per cycle) its MACs take longer than
    moving its bytes, ``t_compute = MACs / (R * C) >= t_data = max(t_load, t_store)``,
    with the load queue moving the input and the weights and the store queue the output,
    each at the bandwidth of its side (host link for host buffers and streamed weights,
    the 64 B/cycle feeds on chip); on chip that is 64 MACs per byte. ``ceiling`` is the
    fewest cycles the timing model allows any mapping: launch, then the longest of
    the load queue's bytes, the store queue's bytes, and this path: the first input row's
    load, the compute queue's stall-free folds (every fold of every N-tile with its fill,
    in WS once per band for the fewest bands the accumulators and a bank allow; the
    better dataflow and pixel pack, ``Conv.pack``), the requantize (and fused LUT and
    residual ADD) vector work, and the last output row's store. With a vector queue the
    vector work overlaps the folds but for at least one output row of the narrowest N-tile
    after the last fold, and a fused input scale's MUL of the first output row's input
    rows before the first fold; without one it all runs on the compute queue. A fused
    residual's bytes are loaded from where it lives (the key names it when that is not
    the input's space). ``MACs / (ceiling * R * C)`` bounds the utilization (an
    N-tile narrower than C or a K not a multiple of R wastes columns or rows on any
    mapping)."""
    shape, key = info.get("shape"), info.get("workload")
    if not shape or not key or not info.get("macs"):
        return None
    task = Task.from_key(key)
    c = task.conv
    peak = cfg.peak_macs_per_cycle
    bw = {Space.HOST: cfg.host_bytes_per_cycle, Space.PCACHE: cfg.feed_activations}
    in_b, out_b = c.h * c.w * c.cin, c.out_h * c.out_w * c.cout
    w_b = info["weights"]
    res, scale = task.residual, task.scale
    t_load = in_b / bw[task.inp] + res * out_b / bw[task.residual_space] + w_b / (
        cfg.host_bytes_per_cycle if task.streamed else cfg.feed_weights)
    t_store = out_b / bw[task.out]
    t_compute = info["macs"] / peak
    passes = 1 + task.lut + res
    first_in = max(1, min(c.h, c.kh - c.pad[0])) * c.w * c.cin
    dma = cfg.dma_descriptor_cycles
    # a fused scale multiplies every input byte once, the first output row's before any fold
    scale_vec = (cfg.vector_latency + -(-in_b // cfg.vector_lanes)) if scale else 0
    scale_head = (cfg.vector_latency + -(-c.kh * c.w * c.cin // cfg.vector_lanes)
                  if scale else 0)
    busy = min(_busy(cfg, replace(c, pack=g).on_array(), passes, out_b, bw[task.out],
                     scale_vec, scale_head) for g in programs.packs(cfg, c))
    ends = dma + math.ceil(first_in / bw[task.inp])
    # the queues must also move every byte: the input rows some window reads, a fused
    # residual, streamed weights (cached ones the array reads in place); the output
    rows = len({y for oy in range(c.out_h) for y in range(oy * c.sh - c.pad[0],
                                                          oy * c.sh - c.pad[0] + c.kh)
                if 0 <= y < c.h})
    moved_in = (rows * c.w * c.cin / bw[task.inp] + res * out_b / bw[task.residual_space]
                + (w_b / cfg.host_bytes_per_cycle if task.streamed else 0))
    ceiling = cfg.layer_launch_cycles + max(ends + busy, dma + math.ceil(moved_in),
                                            dma + math.ceil(t_store))
    return {"bound": "compute" if t_compute >= max(t_load, t_store) else
            ("load" if t_load >= t_store else "store"),
            "intensity": info["macs"] / (in_b + w_b + out_b),
            "t_compute": round(t_compute), "t_load": round(t_load), "t_store": round(t_store),
            "ceiling_cycles": ceiling,
            "ceiling_utilization": info["macs"] / (ceiling * peak)}


def _busy(cfg: NpuConfig, c: Conv, passes: int, out_b: int, out_bw: float,
          scale_vec: int = 0, scale_head: int = 0) -> int:
    """Fewest compute-and-vector cycles of the array conv ``c`` (any dataflow and bands),
    plus its last output row's store at ``out_bw`` bytes per cycle. ``scale_vec`` /
    ``scale_head``: a fused input scale's vector cycles, all of them / those before the
    first fold."""
    m = c.out_h * c.out_w
    tiles = programs.n_tiles(c, cfg.cols)
    vec = scale_vec + sum(passes * (cfg.vector_latency + -(-m * nl // cfg.vector_lanes))
                          for _, nl in tiles)
    folds = {}
    for df in (Dataflow.WS, Dataflow.OS):
        total = 0
        for _, nl in tiles:
            k = programs.tile_k(c, nl)
            if df == Dataflow.WS:
                # every band pays each K-fold's fill; a band's N-tile must fit the
                # accumulators, its output a bank, its pixels one STORE
                nb = max(-(-m * nl // cfg.accumulator_words), -(-out_b // cfg.activation_bank),
                         -(-m // programs.MAX_RUN))
                total += -(-k // cfg.rows) * (timing.fold_cycles(cfg, df, 0) * nb + m)
            else:
                total += -(-m // cfg.rows) * timing.fold_cycles(cfg, df, k)
        folds[df] = total
    narrow = min(nl for _, nl in tiles)
    store = cfg.dma_descriptor_cycles + math.ceil(c.out_w * narrow / out_bw)
    if cfg.vector_queue:
        tail = passes * (cfg.vector_latency + -(-c.out_w * narrow // cfg.vector_lanes))
        return store + max(scale_head + min(folds.values()) + tail, vec)
    return store + min(folds.values()) + vec


def placement(cfg: NpuConfig, part: Partition, model: NpuModel) -> dict[str, Any]:
    """The report as a JSON-able dict."""
    from .runtime import NpuDevice

    device = NpuDevice(model, cfg)
    seg_reports = []
    layer_energy: dict[int, float] = {}  # id(layer info) -> J (its SYNC section)
    for i, seg in enumerate(model.segments):
        zeros = [np.zeros(s["shape"], dtype=np.int8) for s in seg.inputs]
        device.run_segment(i, zeros)
        r = device.reports[-1]
        for ly, sec in zip([ly for ly in seg.layers if ly["instructions"]], r.sections):
            layer_energy[id(ly)] = sec["energy_j"]
        seg_reports.append({
            "name": seg.name, "layers": len(seg.layers), "cycles": r.cycles,
            "invoke_cycles": r.invoke_cycles, "ms": r.ms,
            "macs": sum(ly["macs"] for ly in seg.layers),
            # the array's MACs count depthwise blocks whole (the simulator's figure)
            "array_macs": r.macs, "array_utilization": r.utilization, "host_in_bytes": r.host_in,
            "host_out_bytes": r.host_out, "streamed_weight_bytes": r.streamed_weights,
            "energy_mj": r.energy.total_j * 1e3 if r.energy else 0.0,
            "instructions": r.instructions})
    npu_macs = sum(s["macs"] for s in seg_reports)
    cpu_macs = _cpu_macs(part)
    total = npu_macs + sum(cpu_macs.values())
    layers = [dict(ly, segment=seg.name, energy_uj=layer_energy.get(id(ly), 0.0) * 1e6)
              for seg in model.segments for ly in seg.layers]
    for ly in layers:
        roof = roofline(cfg, ly)
        if roof is not None:
            ly["roofline"] = roof
    npu_ops = Counter(op for ly in layers for op in ly["ops"])
    cpu_ops = [dict(c, macs=cpu_macs.get(c["var"], 0)) for c in part.cpu_ops]
    compute = [ly for ly in layers if ly.get("roofline", {}).get("bound") == "compute"]
    return {
        "config": cfg.name, "link": cfg.link.name, "clock_mhz": cfg.clock_mhz,
        "array": [cfg.rows, cfg.cols], "peak_tops": cfg.peak_tops,
        "segments": seg_reports,
        "ops": {"npu_layers": len(layers), "npu_ops": dict(npu_ops), "cpu": cpu_ops},
        "macs": {"total": total, "npu": npu_macs, "cpu": sum(cpu_macs.values()),
                 "npu_fraction": npu_macs / total if total else 0.0},
        "memory": {"parameter_cache_bytes": cfg.parameter_cache,
                   "params_bytes": model.param_bytes,
                   "cached_weight_bytes": model.cached_weights,
                   "streamed_weight_bytes": model.streamed_weights,
                   "activation_scratch_bytes": model.scratch_bytes},
        "per_inference": {
            "cycles": sum(s["cycles"] for s in seg_reports),
            "ms": sum(s["ms"] for s in seg_reports),
            "energy_mj": sum(s["energy_mj"] for s in seg_reports),
            "utilization": npu_macs / (sum(s["cycles"] for s in seg_reports)
                                       * cfg.peak_macs_per_cycle) if seg_reports else 0.0,
            # compute-bound layers (``roofline``): MAC-weighted utilization, and what the
            # timing model allows them at best
            "compute_layers": len(compute),
            "compute_layer_utilization": (sum(ly["macs"] for ly in compute) /
                                          (sum(ly["cycles"] for ly in compute)
                                           * cfg.peak_macs_per_cycle)) if compute else 0.0,
            "compute_layer_ceiling": (sum(ly["macs"] for ly in compute) /
                                      (sum(ly["roofline"]["ceiling_cycles"] for ly in compute)
                                       * cfg.peak_macs_per_cycle)) if compute else 0.0,
        },
        "layers": layers,
    }


def to_text(rep: dict[str, Any], max_layers: int = 20) -> str:
    """Human-readable form (the Edge TPU compiler's log, plus timing)."""
    m, mem, inf = rep["macs"], rep["memory"], rep["per_inference"]
    lines = [
        (f"edge-npu placement ({rep['config']}, {rep['array'][0]}x{rep['array'][1]} @ "
         f"{rep['clock_mhz']:.0f} MHz, {rep['link']} link)"),
        (f"  NPU segments: {len(rep['segments'])}, NPU layers: {rep['ops']['npu_layers']}, "
         f"ops on CPU: {len(rep['ops']['cpu'])}"),
        f"  MACs on NPU: {m['npu']:,} of {m['total']:,} ({m['npu_fraction']:.1%})",
        (f"  on-chip memory for parameters: "
         f"{mem['params_bytes'] + mem['cached_weight_bytes']:,} B (weights "
         f"{mem['cached_weight_bytes']:,} B, params {mem['params_bytes']:,} B); "
         f"streamed weights: {mem['streamed_weight_bytes']:,} B per inference"),
        (f"  per inference: {inf['cycles']:,} cycles, {inf['ms']:.3f} ms (with host invokes), "
         f"{inf['energy_mj']:.3f} mJ, MAC utilization {inf['utilization']:.1%} "
         + (f"(compute-bound layers: {inf['compute_layer_utilization']:.1%} of peak, "
            f"timing-model ceiling {inf['compute_layer_ceiling']:.1%}, "
            f"{inf['compute_layers']} layers)" if inf["compute_layers"] else
            "(no layer is compute-bound: every one waits on its loads or stores)"))
        if rep["layers"] else "  per inference: no NPU work (every op runs on the CPU)",
        f"  ops on the CPU ({len(rep['ops']['cpu'])}), by op and reason:"]
    if m["npu"] == 0 and any(c["reason"].startswith(FLOAT_REASON) for c in rep["ops"]["cpu"]):
        lines.insert(3, "  hint: the NPU runs int8 layers only; build with --quantize int8 "
                        "--calib DATA, or give a QDQ model")
    lines += _cpu_lines(rep["ops"]["cpu"])
    if not rep["layers"]:
        return "\n".join(lines)
    lines.append("  NPU op counts: " + ", ".join(f"{k.split('.')[-1]} {v}" for k, v in
                                                  sorted(rep["ops"]["npu_ops"].items())))
    top = sorted(rep["layers"], key=lambda ly: -ly["cycles"])[:max_layers]
    lines.append(f"  slowest {len(top)} layers: name kind cycles MACs util dataflow(xpack) "
                 "bound")
    for ly in top:
        pack = f"x{ly['pack']}" if ly.get("pack", 1) > 1 else ""
        lines.append(f"    {ly['name']:<10} {_fused_kind(ly):<14} {ly['cycles']:>9,} "
                     f"{ly['macs']:>12,} {ly['utilization']:>6.1%} {ly.get('dataflow', '-')}{pack} "
                     f"{ly.get('roofline', {}).get('bound', '-')}"
                     f"{' streamed' if ly['streamed'] else ''}")
    lines += _cascade_lines(rep["layers"])
    return "\n".join(lines)


def _cascade_lines(layers: list[dict[str, Any]]) -> list[str]:
    """One line per cascade: its layers and cycles together against one by one (the
    layer table's cycles are each layer's alone)."""
    groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for ly in layers:
        if ly.get("cascade"):
            groups.setdefault(ly["cascade"]["name"], (ly["cascade"], []))[1].append(ly["name"])
    head = (f"  cascades (layers run band by band together; the table's cycles are each "
            f"layer's alone): {len(groups)}")
    lines = [head] if groups else []
    for name, (c, names) in groups.items():
        link = (f"; its host {' and '.join({'in': 'input', 'out': 'output'}[w] for w in q)} "
                "over the host queue" if (q := c.get("host_queue")) else "")
        rings = f"; {n} intermediates through row rings" if (n := c.get("rings")) else ""
        lines.append(f"    {name}: {names[0]} .. {names[-1]} ({len(names)} layers) "
                     f"{c['cycles']:,} cycles, {c['alone_cycles']:,} one by one{link}{rings}")
    return lines


def _cpu_lines(cpu: list[dict[str, Any]], names: int = 3) -> list[str]:
    """One line per (op, reason) in first-seen order: the count and the first few vars
    (the Edge TPU compiler's table; ``--json`` lists every op)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for c in cpu:
        groups.setdefault((c["op"], c["reason"]), []).append(c["var"])
    lines = []
    for (op, reason), vs in groups.items():
        more = f" and {len(vs) - names} more" if len(vs) > names else ""
        lines.append(f"    {len(vs):>4} {op.removeprefix('relax.'):<18} {reason} "
                     f"({', '.join(vs[:names])}{more})")
    return lines


def _fused_kind(ly: dict[str, Any]) -> str:
    """A layer's kind with what fused into it: ``mul+conv+lut+add``, ``resize+add``;
    ``resize>concat``: it stores into a concat's output."""
    return ("mul+" if ly.get("fused_scale") else "") + (
        "resize+" if ly.get("fused_resize") else "") + ly["kind"] + (
        "+lut" if ly.get("fused_lut") else "") + ("+add" if ly.get("fused_residual") else "") + (
        ">concat" if ly.get("into_concat") else "")
