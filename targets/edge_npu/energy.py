"""Energy of one run from event counts and the config's table (pJ, W).

E = MACs * mac_pj + SRAM bytes * sram_pj_per_byte + host bytes * link pj_per_byte
    + static_w * time, the dynamic terms scaled by ``tech_scale`` (1.0 = the table's
node). Figures are Horowitz-style per-operation costs (NPU.md), not a circuit model.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import NpuConfig


@dataclass(frozen=True)
class Energy:
    mac_j: float
    sram_j: float
    host_j: float
    static_j: float

    @property
    def total_j(self) -> float:
        return self.mac_j + self.sram_j + self.host_j + self.static_j


def energy(cfg: NpuConfig, macs: int, sram_bytes: int, host_bytes: int,
           seconds: float) -> Energy:
    s = cfg.tech_scale * 1e-12
    return Energy(mac_j=macs * cfg.mac_pj * s, sram_j=sram_bytes * cfg.sram_pj_per_byte * s,
                  host_j=host_bytes * cfg.link.pj_per_byte * s,
                  static_j=cfg.static_w * seconds)
