"""edge-npu hardware description: one frozen dataclass loaded from configs/*.json.

Every derived figure (peak MAC/cycle, TOPS, SRAM partitions, host-link bytes/cycle)
is a property here, so the ISA, simulator and cost models never recompute them.
Invalid files fail with an ``EdgecError`` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.errors import TargetError

CONFIG_DIR = Path(__file__).parent / "configs"
DATAFLOWS = ("ws", "os")
KIB = 1024


@dataclass(frozen=True)
class Link:
    """Host link: bandwidth, fixed cost per invoke, energy per byte moved."""

    name: str
    gbytes_per_s: float
    invoke_us: float
    pj_per_byte: float


@dataclass(frozen=True)
class NpuConfig:
    """One edge-npu variant. Sizes in bytes, energy in pJ, clock in MHz."""

    name: str
    source: str
    clock_mhz: float
    rows: int
    cols: int
    default_dataflow: str
    sram_total: int
    activation_bank: int
    activation_banks: int
    accumulators: int
    program: int
    feed_activations: int
    feed_weights: int
    feed_accumulators: int
    vector_lanes: int
    vector_latency: int
    vector_queue: int
    dma_descriptor_cycles: int
    layer_launch_cycles: int
    config_cycles: int
    link: Link
    links: tuple[Link, ...]
    mac_pj: float
    sram_pj_per_byte: float
    static_w: float
    tech_scale: float

    # -- derived values: the only place they are computed --------------------------
    @property
    def peak_macs_per_cycle(self) -> int:
        return self.rows * self.cols

    @property
    def peak_tops(self) -> float:
        """int8 TOPS counting a MAC as two operations, as vendors do."""
        return 2 * self.peak_macs_per_cycle * self.clock_mhz * 1e6 / 1e12

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6

    @property
    def activation_bytes(self) -> int:
        return self.activation_bank * self.activation_banks

    @property
    def accumulator_words(self) -> int:
        return self.accumulators // 4

    @property
    def parameter_cache(self) -> int:
        """What is left of the SRAM after the fixed partitions caches parameters."""
        return self.sram_total - self.activation_bytes - self.accumulators - self.program

    @property
    def host_bytes_per_cycle(self) -> float:
        return self.link.gbytes_per_s * 1e9 / self.clock_hz

    @property
    def invoke_cycles(self) -> int:
        return math.ceil(self.link.invoke_us * 1e-6 * self.clock_hz)

    def with_link(self, name: str) -> NpuConfig:
        """The same machine behind another known host link."""
        from dataclasses import replace

        for link in self.links:
            if link.name == name:
                return replace(self, link=link)
        raise TargetError(f"{self.source}: unknown link {name!r}; known: "
                          f"{', '.join(k.name for k in self.links)}")


def _get(data: dict[str, Any], path: str, source: str, kind: type = int,
         positive: bool = True) -> Any:
    """Fetch ``a.b`` from nested dicts, checking presence, type and sign."""
    node: Any = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise TargetError(f"{source}: missing field {path!r}")
        node = node[key]
    if kind is str:
        if not isinstance(node, str):
            raise TargetError(f"{source}: field {path!r} must be a string, got {node!r}")
        return node
    # bool is an int in Python; a true/false size is a typo, not a size
    if isinstance(node, bool) or not isinstance(node, (int, float)) or (
            kind is int and not float(node).is_integer()):
        raise TargetError(f"{source}: field {path!r} must be a {kind.__name__}, got {node!r}")
    if node < 0 or (positive and node == 0):
        raise TargetError(f"{source}: field {path!r} must be "
                          f"{'positive' if positive else 'non-negative'}, got {node!r}")
    return kind(node)


def parse_config(data: dict[str, Any], source: str) -> NpuConfig:
    """Build and check an ``NpuConfig`` from parsed JSON; ``source`` names the file."""
    if not isinstance(data, dict):
        raise TargetError(f"{source}: top level must be a JSON object")
    links_raw = data.get("links")
    if not isinstance(links_raw, dict) or not links_raw:
        raise TargetError(f"{source}: missing field 'links' (a table of host links)")
    links = tuple(Link(name, _get(data, f"links.{name}.gbytes_per_s", source, float),
                       _get(data, f"links.{name}.invoke_us", source, float, positive=False),
                       _get(data, f"links.{name}.pj_per_byte", source, float, positive=False))
                  for name in links_raw)
    link_name = _get(data, "link", source, str)
    link = next((k for k in links if k.name == link_name), None)
    if link is None:
        raise TargetError(f"{source}: field 'link' names unknown link {link_name!r}; "
                          f"known: {', '.join(k.name for k in links)}")
    dataflow = _get(data, "array.default_dataflow", source, str)
    if dataflow not in DATAFLOWS:
        raise TargetError(f"{source}: field 'array.default_dataflow' must be one of "
                          f"{DATAFLOWS}, got {dataflow!r}")
    cfg = NpuConfig(
        name=_get(data, "name", source, str), source=source,
        clock_mhz=_get(data, "clock_mhz", source, float),
        rows=_get(data, "array.rows", source), cols=_get(data, "array.cols", source),
        default_dataflow=dataflow,
        sram_total=_get(data, "sram_kib.total", source) * KIB,
        activation_bank=_get(data, "sram_kib.activation_bank", source) * KIB,
        activation_banks=_get(data, "sram_kib.activation_banks", source),
        accumulators=_get(data, "sram_kib.accumulators", source) * KIB,
        program=_get(data, "sram_kib.program", source) * KIB,
        feed_activations=_get(data, "feeds_bytes_per_cycle.activations", source),
        feed_weights=_get(data, "feeds_bytes_per_cycle.weights", source),
        feed_accumulators=_get(data, "feeds_bytes_per_cycle.accumulators", source),
        vector_lanes=_get(data, "vector.lanes", source),
        vector_latency=_get(data, "vector.latency_cycles", source, positive=False),
        vector_queue=_get(data, "vector.queue", source, positive=False),
        dma_descriptor_cycles=_get(data, "costs.dma_descriptor_cycles", source, positive=False),
        layer_launch_cycles=_get(data, "costs.layer_launch_cycles", source, positive=False),
        config_cycles=_get(data, "costs.config_cycles", source, positive=False),
        link=link, links=links,
        mac_pj=_get(data, "energy.mac_pj", source, float, positive=False),
        sram_pj_per_byte=_get(data, "energy.sram_pj_per_byte", source, float, positive=False),
        static_w=_get(data, "energy.static_w", source, float, positive=False),
        tech_scale=_get(data, "energy.tech_scale", source, float),
    )
    if cfg.parameter_cache <= 0:
        raise TargetError(
            f"{source}: field 'sram_kib': partitions (activations {cfg.activation_bytes // KIB} "
            f"+ accumulators {cfg.accumulators // KIB} + program {cfg.program // KIB} KiB) "
            f"leave no parameter cache in {cfg.sram_total // KIB} KiB total")
    return cfg


def config_names() -> list[str]:
    """The bundled configs, by name."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path = "edge-npu") -> NpuConfig:
    """Load a bundled config by name (``edge-npu``, ``edge-npu-s``...) or a JSON path."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(config_names())
        raise TargetError(f"edge-npu config {str(name_or_path)!r} not found; bundled: {known}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TargetError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return parse_config(data, str(path))
