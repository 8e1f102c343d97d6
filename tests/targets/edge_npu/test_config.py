"""Config loading, derived values and clear errors for bad files."""

from __future__ import annotations

import json

import pytest
from edgec.errors import EdgecError
from edgec.targets.edge_npu.config import CONFIG_DIR, load_config


def test_bundled_configs_and_derived_values():
    cfg = load_config()
    # NPU.md anchors: 64x64 at 500 MHz = 4096 MAC/cycle, ~4.1 TOPS, ~7.2 MiB cache,
    # 0.4 GB/s at 500 MHz = 0.8 B/cycle, 200 us invoke on usb
    assert cfg.peak_macs_per_cycle == 4096
    assert cfg.peak_tops == pytest.approx(4.096)
    assert cfg.parameter_cache == (8192 - 512 - 256 - 64) * 1024
    assert cfg.host_bytes_per_cycle == pytest.approx(0.8)
    assert cfg.invoke_cycles == 100_000
    assert load_config("edge-npu-s").rows == 16
    assert load_config("edge-npu-soc").link.name == "soc"


def _write(tmp_path, mutate):
    data = json.loads((CONFIG_DIR / "edge-npu.json").read_text())
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["array"].pop("rows"), "missing field 'array.rows'"),
    (lambda d: d["sram_kib"].update(accumulators=-4), "'sram_kib.accumulators' must be"),
    (lambda d: d["sram_kib"].update(activation_bank=4096), "leave no parameter cache"),
    (lambda d: d.update(link="wifi"), "unknown link 'wifi'"),
    (lambda d: d["array"].update(default_dataflow="is"), "default_dataflow"),
    (lambda d: d.update(clock_mhz="fast"), "'clock_mhz' must be a float"),
])
def test_bad_configs_name_file_and_field(tmp_path, mutate, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(EdgecError, match=message) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_name():
    with pytest.raises(EdgecError, match="bundled: edge-npu"):
        load_config("edge-npu-xl")
