"""Runs edge-npu packages: CPU parts on TVM's VM, NPU segments on the simulator.

The compiled ``model.so`` calls ``R.call_dps_packed("edgec.edge_npu.run", key, seg,
*inputs, *outputs)`` for each NPU segment. That global function (registered once per
process) looks up the ``NpuDevice`` loaded for ``key`` and runs segment ``seg`` on it:
inputs are written to the device's host memory (NCHW -> HWC, the host driver's job),
the segment's program runs bit-exactly on the simulator, outputs are read back into
the VM's preallocated tensors. The device keeps its parameter cache between calls
(cached weights are loaded once, as on the Edge TPU; streamed ones cross the link on
every inference and are counted in the report).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .bundle import from_files
from .config import NpuConfig, load_config
from .int_reference import from_hwc, to_hwc
from .lower import NpuModel
from .simulator import Report, Simulator

PACKED_FUNC = "edgec.edge_npu.run"
_DEVICES: dict[int, NpuDevice] = {}
_LOCK = threading.Lock()


class NpuDevice:
    """One simulated chip with a model's memory images loaded."""

    def __init__(self, model: NpuModel, cfg: NpuConfig | None = None) -> None:
        self.model = model
        self.cfg = cfg or load_config(model.config)
        self.sim = Simulator(self.cfg, host_bytes=max(model.host_bytes, 64), functional=True)
        for space, addr, data in model.images:
            self.sim.mem.write(space, addr, np.frombuffer(data, dtype=np.uint8))
        self.reports: list[Report] = []  # one per segment call since the last reset
        self.calls: list[int] = []  # the segment of each report
        self.last_inputs: dict[int, list[np.ndarray]] = {}  # for checks against a reference

    def run_segment(self, index: int, inputs: list[np.ndarray]) -> list[np.ndarray]:
        seg = self.model.segments[index]
        self.last_inputs[index] = [np.array(x, dtype=np.int8) for x in inputs]
        for spec, x in zip(seg.inputs, inputs):
            data = to_hwc(np.asarray(x, dtype=np.int8)).reshape(-1)
            self.sim.mem.write(_host(), spec["addr"], data)
        self.reports.append(self.sim.run(seg.program))
        self.calls.append(index)
        outs = []
        for spec in seg.outputs:
            shape = tuple(spec["shape"])
            n = int(np.prod(shape))
            flat = self.sim.mem.read(_host(), spec["addr"], n)
            outs.append(from_hwc(_hwc_view(flat, shape), shape))
        return outs


def _host() -> Any:
    from .isa import Space

    return Space.HOST


def _hwc_view(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 4:
        return flat.reshape(shape[2], shape[3], shape[1])
    return flat.reshape(shape[-2], 1, shape[-1])  # 2-D or 1 x M x N


def register_device(key: int, device: NpuDevice) -> None:
    """Make ``device`` the one the VM's calls with ``key`` run on."""
    _ensure_packed_func()
    with _LOCK:
        _DEVICES[key] = device


def _ensure_packed_func() -> None:
    import tvm

    if tvm.get_global_func(PACKED_FUNC, allow_missing=True) is not None:
        return

    def run(key: int, seg: int, *tensors: Any) -> None:
        device = _DEVICES.get(int(key))
        if device is None:
            raise RuntimeError(f"edge-npu: no device loaded for model key {key}")
        n_in = len(device.model.segments[int(seg)].inputs)
        outs = device.run_segment(int(seg), [t.numpy() for t in tensors[:n_in]])
        for t, o in zip(tensors[n_in:], outs):
            t.copyfrom(np.ascontiguousarray(o))

    tvm.register_global_func(PACKED_FUNC, run, override=True)


class NpuExecutor:
    """Loads an edge-npu package: ``model.so`` on the VM, the NPU program on the simulator."""

    def __init__(self, library: bytes, extra_files: dict[str, bytes],
                 target: dict[str, Any] | None = None) -> None:
        from edgec.targets.host.runtime import HostExecutor

        model, key = from_files(extra_files)
        self.device = NpuDevice(model)
        self.key = key
        register_device(key, self.device)
        self._host = HostExecutor(library, target or {})

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.device.reports.clear()
        self.device.calls.clear()
        return self._host.run(arrays)

    def benchmark(self, arrays: list[np.ndarray], repeat: int, warmup: int) -> dict[str, Any]:
        """Host wall time of the simulated run (``median_ms`` etc.: the simulator's speed,
        not the chip's), plus the simulated device figures per inference (``npu_*``:
        cycles, latency at the clock with host invokes, energy, MAC utilization)."""
        stats: dict[str, Any] = dict(self._host.benchmark(arrays, repeat, warmup))
        self.run(arrays)
        stats.update(self.simulated())
        return stats

    def simulated(self) -> dict[str, Any]:
        """Simulated figures of the last ``run`` (all NPU segment calls of one inference)."""
        reps = self.device.reports
        cfg = self.device.cfg
        cycles = sum(r.cycles for r in reps)
        macs = sum(r.macs for r in reps)  # the array's: depthwise blocks count whole
        useful = sum(ly["macs"] for i in self.device.calls
                     for ly in self.device.model.segments[i].layers)
        return {
            "npu_config": cfg.name, "npu_link": cfg.link.name, "npu_calls": len(reps),
            "npu_ms": sum(r.ms for r in reps), "npu_cycles": cycles,
            "npu_invoke_cycles": sum(r.invoke_cycles for r in reps),
            "npu_energy_mj": sum(r.energy.total_j for r in reps if r.energy) * 1e3,
            "npu_macs": useful, "npu_array_macs": macs,
            "npu_utilization": useful / (cycles * cfg.peak_macs_per_cycle) if cycles else 0.0,
            "npu_array_utilization": macs / (cycles * cfg.peak_macs_per_cycle) if cycles else 0.0,
            "npu_host_bytes": sum(r.host_in + r.host_out for r in reps),
            "npu_streamed_weight_bytes": sum(r.streamed_weights for r in reps),
        }

    def last_reports(self) -> list[Report]:
        """Simulator reports of the last ``run`` (one per NPU segment call)."""
        return list(self.device.reports)
