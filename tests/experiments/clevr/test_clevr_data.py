import json

from idspn.experiments.clevr import data, synth
from idspn.experiments.clevr.config import ClevrConfig
from idspn.experiments.config import load_config


def test_a_renderer_change_regenerates_a_complete_data_set_and_its_cache(tmp_path, monkeypatch):
    # The generator's own record is only consulted when it runs; the data set's marker and the
    # image cache's name must change with the renderer too, or a finished data set is never redone.
    cfg = load_config(ClevrConfig, "clevr-smoke", [f"data.work_dir={tmp_path}"])
    calls = []
    monkeypatch.setattr(synth, "generate", lambda out, splits, **kw: calls.append(dict(splits)))
    data._generate_once(cfg, progress=False)
    data._generate_once(cfg, progress=False)
    assert len(calls) == 1  # complete: not generated again
    marker = data.synth_dir(cfg) / "generated.json"
    assert json.loads(marker.read_text())["renderer"] == synth.RENDERER_VERSION
    cache_before = data._cache_path(cfg, tmp_path, "train")
    monkeypatch.setattr(synth, "RENDERER_VERSION", synth.RENDERER_VERSION + 1)
    data._generate_once(cfg, progress=False)
    assert len(calls) == 2
    assert data._cache_path(cfg, tmp_path, "train") != cache_before
