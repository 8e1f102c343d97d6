"""The edge-npu tuner: tuned mappings never lose to the default and stay bit-exact; the
database survives a kill and resumes; LUT fusion keeps the integer results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from edgec.targets.edge_npu import int_reference, programs, tuner
from edgec.targets.edge_npu.config import load_config
from edgec.targets.edge_npu.lower import lower
from edgec.targets.edge_npu.mapping import Mapping
from edgec.targets.edge_npu.runtime import NpuDevice

from .conftest import run_conv
from .reference import conv_requant
from .test_functional import _layer
from .tuner_fixture import small_model


def _run(cfg, segs, model, seed=0):
    x = np.random.default_rng(seed).integers(-128, 128, (1, 8, 24, 24)).astype(np.int8)
    got = NpuDevice(model, cfg).run_segment(0, [x])[0]
    return got, int_reference.run_segment(segs[0], [x])[0]


def test_fusion_is_bit_exact_and_saves_layers(npu):
    """x * lut(x) folds into one LUT, which fuses into the conv before it."""
    segs = small_model()
    fused = lower(npu, segs)
    got, ref = _run(npu, segs, fused)
    assert np.array_equal(got, ref)
    names = [ly["name"] for ly in fused.segments[0].layers]
    assert names == ["c1", "c2", "c3", "c4"] and fused.segments[0].layers[0]["fused_lut"]
    plain_segs = small_model()
    plain = lower(npu, plain_segs, fuse=False)
    assert len(plain.segments[0].layers) == 6
    assert np.array_equal(_run(npu, plain_segs, plain)[0], ref)
    assert tuner.model_cycles(npu, fused) < tuner.model_cycles(npu, plain)


@pytest.mark.parametrize("case", [(20, 12, 24, 70, 3, 1, (1, 1, 1, 1), False),
                                  (16, 16, 40, 40, 3, 2, (0, 0, 1, 1), True)])
def test_every_mapping_is_bit_exact(small, case):
    """Each dataflow x band-rows x loop order the tuner may pick computes the same."""
    rng = np.random.default_rng(7)
    conv, x, wt, bias, mult, shift = _layer(rng, *case)
    want = conv_requant(x, wt, bias, mult, shift, 4, -128, 127, case[5], case[6], 2, case[7])
    task = tuner.Task("t", conv, "conv", programs.Space.HOST, programs.Space.HOST, False, False)
    maps = tuner.candidates(small, task)
    assert {m.order for m in maps} == {"band", "tile"} and len({m.band_rows for m in maps}) > 2
    for mp in maps[::3]:
        got, _, _ = run_conv(small, conv, x, wt, bias, mult, shift, 4, -128, 127, zp_in=2,
                             dataflow=mp.dataflow, band_rows=mp.band_rows, order=mp.order)
        np.testing.assert_array_equal(got, want, err_msg=str(mp))


def test_tuned_mapping_beats_or_equals_default_and_stays_exact(npu, tmp_path):
    segs = small_model()
    default = lower(npu, segs)
    tasks = tuner.tasks_of(default)
    assert len(tasks) == 4
    n, before = tuner.search(npu, tasks, tuner.Database(tmp_path), trials=60)
    assert (n, before) == (60, 0)
    best = tuner.load_mappings(tmp_path, npu.name)
    assert set(best) == {t.key for t in tasks}
    for t in tasks:
        d, _ = tuner.measure(npu, t, tuner.resolved_default(npu, t))
        b, _ = tuner.measure(npu, t, best[t.key])
        assert d is not None and b is not None and b <= d
    tuned_segs = small_model()
    tuned = lower(npu, tuned_segs, mappings=best)
    assert tuner.model_cycles(npu, tuned) <= tuner.model_cycles(npu, default)
    assert any(best[t.key] != tuner.resolved_default(npu, t) for t in tasks)
    got, ref = _run(npu, tuned_segs, tuned, seed=3)
    assert np.array_equal(got, ref)


def test_a_tuned_model_slower_than_the_default_is_not_kept(npu):
    """Mappings are measured layer by layer; if the whole model comes out slower with
    them (here: one-row bands everywhere), ``lower_best`` keeps the defaults."""
    from edgec.targets.edge_npu.offload import lower_best

    default = lower(npu, small_model())
    slow = {t.key: Mapping(band_rows=1) for t in tuner.tasks_of(default)}
    assert tuner.model_cycles(npu, lower(npu, small_model(), mappings=slow)) > \
        tuner.model_cycles(npu, default)
    kept = lower_best(npu, small_model(), None, slow)
    assert tuner.model_cycles(npu, kept) == tuner.model_cycles(npu, default)


def test_database_resumes_and_skips_torn_lines(npu, tmp_path):
    tasks = tuner.tasks_of(lower(npu, small_model()))
    db = tuner.Database(tmp_path)
    assert tuner.search(npu, tasks, db, trials=12) == (12, 0)
    with open(db.path, "ab") as f:
        f.write(b'{"v": 1, "key": "tor')  # a write cut by a kill
    assert len(db.records()) == 12
    assert tuner.search(npu, tasks, db, trials=20) == (8, 12)
    recs = db.records()
    assert len(recs) == 20
    seen = [(r["key"], json.dumps(r["mapping"], sort_keys=True)) for r in recs]
    assert len(set(seen)) == 20  # nothing measured twice


KILL_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from edgec.targets.edge_npu import tuner
from edgec.targets.edge_npu.config import load_config
from edgec.targets.edge_npu.lower import lower
from tuner_fixture import small_model
import time
measure = tuner.measure
tuner.measure = lambda *a: (time.sleep(0.05), measure(*a))[1]  # a slower machine
cfg = load_config("edge-npu")
tasks = tuner.tasks_of(lower(cfg, small_model()))
tuner.search(cfg, tasks, tuner.Database({db!r}), trials=10**6)
"""


def test_database_survives_kill_9(tmp_path):
    """SIGKILL mid-search: every complete line still parses and the search resumes."""
    cfg = load_config("edge-npu")
    script = KILL_SCRIPT.format(here=os.path.dirname(__file__), db=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script])
    path = tmp_path / tuner.DB_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-search, not finished or crashed
    db = tuner.Database(tmp_path)
    have = len(db.records())
    assert have >= 8
    tasks = tuner.tasks_of(lower(cfg, small_model()))
    total = sum(len(tuner.candidates(cfg, t)) for t in tasks)
    if have < total:
        n, before = tuner.search(cfg, tasks, db, trials=have + 5)
        assert before == have and n == min(5, total - have)
    assert set(tuner.load_mappings(tmp_path, cfg.name)) == {t.key for t in tasks}


def test_mapping_rejects_bands_that_do_not_fit(small):
    conv = programs.Conv(40, 40, 16, 32)
    most = programs.max_band_rows(small, conv)
    task = tuner.Task("t", conv, "conv", programs.Space.PCACHE, programs.Space.PCACHE,
                      False, False)
    cyc, err = tuner.measure(small, task, Mapping("ws", most + 1, "band"))
    assert cyc is None and "rows per band" in err


def test_bad_or_stale_records_fall_back_to_the_default(npu, tmp_path):
    """A record that no longer fits (or is not a mapping) never moves a layer to the CPU
    or breaks the build: the layer gets its default mapping."""
    segs = small_model()
    default = lower(npu, segs)
    tasks = tuner.tasks_of(default)
    db = tuner.Database(tmp_path)
    db.append({"key": tasks[0].key, "mapping": {"band_rows": 999, "dataflow": "ws"},
               "cycles": 1})
    db.append({"key": tasks[1].key, "mapping": "ws", "cycles": 1})
    db.append({"key": tasks[2].key, "mapping": {"dataflow": "xs"}, "cycles": 1})
    maps = tuner.load_mappings(tmp_path, npu.name)
    assert set(maps) == {tasks[0].key}
    model = lower(npu, small_model(), mappings=maps)
    assert [ly["cycles"] for ly in model.segments[0].layers] == \
        [ly["cycles"] for ly in default.segments[0].layers]


def test_fused_convs_are_tuned_as_what_they_run(small, tmp_path):
    """A conv with a fused input scale and residual add is its own task (its key says
    so), measured with the scale and the add in its program; each candidate mapping
    fits (the bank keeps room for s and the residual tiles), the tuned mapping is the
    one the lowering uses, and the result stays bit-exact."""
    import json

    from .conftest import assert_segments_bit_exact
    from .test_fusion import _residual

    segs = [_residual(h=30, w=40, cin=32, cout=40, scaled=True)]
    default = lower(small, segs)
    (task,) = [t for t in tuner.tasks_of(default) if t.scale and t.residual]
    assert json.loads(task.key)["residual"] and json.loads(task.key)["scale"]
    maps = tuner.candidates(small, task)
    assert all(tuner.measure(small, task, mp)[0] is not None for mp in maps)
    n, _ = tuner.search(small, [task], tuner.Database(tmp_path), trials=12)
    assert n == 12
    best = tuner.load_mappings(tmp_path, small.name)
    tuned = lower(small, segs, mappings=best)
    (ly,) = [ly for ly in tuned.segments[0].layers if ly["fused_residual"]]
    # the layer at its places takes what the tuner measured for the best mapping
    assert ly["cycles"] == tuner.measure(small, task, best[task.key])[0]
    assert tuner.model_cycles(small, tuned) <= tuner.model_cycles(small, default)
    assert_segments_bit_exact(tuned, segs, small, seed=4)


def test_a_fused_residual_key_names_where_the_residual_lives(npu):
    """A residual in the input's space keeps session 10's key (``"residual": true``); one
    elsewhere names its space, and the tuner measures the load from there."""
    import json

    from edgec.targets.edge_npu.isa import Space
    from edgec.targets.edge_npu.mapping import workload_key
    from edgec.targets.edge_npu.programs import Conv

    conv = Conv(20, 20, 64, 64)
    same = workload_key(npu.name, conv, Space.PCACHE, Space.PCACHE, residual=Space.PCACHE)
    assert same == workload_key(npu.name, conv, Space.PCACHE, Space.PCACHE, residual=True)
    assert json.loads(same)["residual"] is True
    host = workload_key(npu.name, conv, Space.PCACHE, Space.PCACHE, residual=Space.HOST)
    assert json.loads(host)["residual"] == "host"
    t_same, t_host = tuner.Task.from_key(same), tuner.Task.from_key(host)
    assert t_same.residual and t_same.residual_in is None
    assert t_host.residual and t_host.residual_in == Space.HOST
    mp = tuner.resolved_default(npu, t_same)
    # the residual's 25.6 kB over the host link cost more than over the on-chip feed
    assert tuner.measure(npu, t_host, mp)[0] > tuner.measure(npu, t_same, mp)[0]


def test_result_text_lists_only_improved_layers_and_what_is_left(tmp_path):
    def task(name, default, best, measured, cands):
        return tuner.TaskResult(name, [name], 1, default, best, {"dataflow": "os"}, measured,
                                cands)

    res = tuner.NpuTuneResult(tmp_path, "edge-npu", 3, 5, 0, 1.0, 300, 290,
                              [task("a", 100, 90, 4, 4), task("b", 100, 100, 1, 6),
                               task("c", 100, 100, 6, 6)], unsearched=1)
    text = res.to_text()
    assert "1 of 3 workloads have mappings not yet measured" in text
    assert "most improved" in text and "    a " in text and "    b " not in text
    res.per_task = res.per_task[1:]
    res.unsearched = 0
    text = res.to_text()
    assert "no layer beat its default mapping" in text and "most improved" not in text
    assert "not yet measured" not in text
