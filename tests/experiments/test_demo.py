from idspn_experiments.cli import build_parser
from idspn_experiments.demo import DEMO_MODELS, DEMO_PRESET
from idspn_experiments.engine.config import load_config
from idspn_experiments.registry import get_experiment


def test_demo_preset_builds_every_demo_model_and_the_cli_offers_it():
    experiment = get_experiment("numbering")
    for name in DEMO_MODELS:
        cfg = load_config(experiment.config_type, DEMO_PRESET, [f"model.name={name}"])
        assert cfg.model.name == name and cfg.data.set_size == 8
        assert experiment.build_model(cfg) is not None
    assert build_parser().parse_args(["demo"]).command == "demo"
