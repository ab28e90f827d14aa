import json

from idspn_experiments.clevr import data
from idspn_experiments.clevr.config import ClevrConfig
from idspn_experiments.clevr_render import generator
from idspn_experiments.engine.config import load_config


def test_a_renderer_change_regenerates_a_complete_data_set(tmp_path, monkeypatch):
    # The generator's own record is only consulted when it runs; the data set's marker must change
    # with the renderer too, or a finished data set is never redone. (The image cache follows the
    # images themselves: its record holds their sizes and times, see test_clevr_layout_and_files.)
    cfg = load_config(ClevrConfig, "clevr-smoke", [f"data.work_dir={tmp_path}"])
    calls = []
    monkeypatch.setattr(generator, "generate", lambda out, splits, **kw: calls.append(dict(splits)))
    data._generate_once(cfg, progress=False)
    data._generate_once(cfg, progress=False)
    assert len(calls) == 1  # complete: not generated again
    marker = data.synth_dir(cfg) / "generated.json"
    assert json.loads(marker.read_text())["renderer"] == generator.RENDERER_VERSION
    monkeypatch.setattr(generator, "RENDERER_VERSION", generator.RENDERER_VERSION + 1)
    data._generate_once(cfg, progress=False)
    assert len(calls) == 2
    assert json.loads(marker.read_text())["renderer"] == generator.RENDERER_VERSION
