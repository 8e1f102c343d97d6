"""Run SCALE-Sim 3.0.0 on a batch of layers; meant for the SCALE-Sim venv (numpy < 2).

Usage: ``<scalesim-python> scalesim_oracle.py < spec.json > rows.json``. The spec is
``{"rows": R, "cols": C, "dataflow": "ws"|"os", "bandwidth": null|words_per_cycle,
"sram_kb": per-buffer KiB,
"layers": [[name, ifmap_h, ifmap_w, filt_h, filt_w, channels, filters, stride], ...]}``.
In USER mode SCALE-Sim 3.0.0 takes the ifmap/filter DRAM bandwidth from the [layout]
bank bandwidth fields and the ofmap's from ``Bandwidth``, so all three are set. All
layers run in one SCALE-Sim invocation (one topology file), so a batch costs one
process start. Output: one dict per layer from COMPUTE_REPORT.csv (``get_total_cycles``
is broken in 3.0.0, so the CSV is the source) and DETAILED_ACCESS_REPORT.csv (DRAM
words read / written; prefetches before compute start at negative cycles, which
"Total Cycles" leaves out and "Total Cycles (incl. prefetch)" counts).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tempfile

CONFIG = """[general]
run_name = oracle

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSRAMSzkB: {sram_kb}
FilterSRAMSzkB: {sram_kb}
OfmapSRAMSzkB: {sram_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: {bandwidth}
Dataflow: {dataflow}
MemoryBanks: 1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: {bandwidth}
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: {bandwidth}
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: {mode}
UseRamulatorTrace: False
"""

HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"


def run(spec: dict) -> list[dict]:
    from scalesim.scale_sim import scalesim

    bw = spec.get("bandwidth")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "oracle.cfg")
        topo = os.path.join(tmp, "layers.csv")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(rows=spec["rows"], cols=spec["cols"], dataflow=spec["dataflow"],
                                  bandwidth=bw or 10, mode="USER" if bw else "CALC",
                                  sram_kb=spec.get("sram_kb", 8192)))
        rows = "".join(",".join(str(x) for x in layer) + ",\n" for layer in spec["layers"])
        for path in (topo, os.path.join(tmp, "layout.csv")):
            with open(path, "w") as f:  # the layout CSV has the topology's columns
                f.write(HEADER + rows)
        out = os.path.join(tmp, "out")
        with contextlib.redirect_stdout(io.StringIO()):  # SCALE-Sim prints progress
            sim = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo,
                           layout=os.path.join(tmp, "layout.csv"), input_type_gemm=False)
            sim.run_scale(top_path=out)
        table = _read(out, "COMPUTE_REPORT.csv")
        access = _read(out, "DETAILED_ACCESS_REPORT.csv")
    return [{"name": layer[0], "total_cycles": int(float(r["Total Cycles"])),
             "total_with_prefetch": int(float(r["Total Cycles (incl. prefetch)"])),
             "stall_cycles": int(float(r["Stall Cycles"])),
             "compute_util": float(r["Compute Util %"]),
             "dram_ifmap_reads": int(float(a["DRAM IFMAP Reads"])),
             "dram_filter_reads": int(float(a["DRAM Filter Reads"])),
             "dram_filter_start": int(float(a["DRAM Filter Start Cycle"])),
             "dram_ofmap_writes": int(float(a["DRAM OFMAP Writes"]))}
            for layer, r, a in zip(spec["layers"], table, access)]


def _read(out: str, name: str) -> list[dict[str, str]]:
    """One of SCALE-Sim's per-run CSV reports as rows of stripped fields."""
    path = next(os.path.join(p, n) for p, _, files in os.walk(out) for n in files if n == name)
    with open(path) as f:
        return [{k.strip(): v.strip() for k, v in row.items() if k and k.strip()}
                for row in csv.DictReader(f)]


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
