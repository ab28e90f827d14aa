import json
import re

import pytest

from idspn_experiments.engine.config import (
    ExperimentConfig,
    TrainConfig,
    apply_overrides,
    config_diff,
    config_from_dict,
    config_to_dict,
    load_config,
    preset_names,
    read_preset,
)
from idspn_experiments.numbering.config import NumberingConfig
from idspn_experiments.registry import EXPERIMENTS


def test_overrides_set_nested_values_with_their_types():
    cfg = apply_overrides(
        NumberingConfig(),
        [
            "train.steps=12",
            "train.lr=0.5",
            "model.name=bilstm",
            "data.augment=true",
            "model.grad_clip=none",
            "train.lr_milestones=[3, 7]",
            "train.select_metric=loss",
            "seed=4",
        ],
    )
    assert cfg.train.steps == 12 and isinstance(cfg.train.steps, int)
    assert cfg.train.lr == 0.5 and cfg.model.name == "bilstm" and cfg.data.augment is True
    assert cfg.model.grad_clip is None and cfg.train.lr_milestones == [3, 7] and cfg.seed == 4
    assert apply_overrides(cfg, ["model.grad_clip=40"]).model.grad_clip == 40.0


def test_overrides_do_not_mutate_the_input():
    cfg = NumberingConfig()
    apply_overrides(cfg, ["train.steps=3"])
    assert cfg.train.steps == TrainConfig().steps


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.stepz=3", "train.stepz"),
        ("modle.name=idspn", "modle.name"),
        ("model.name.x=1", "model.name.x"),
    ],
)
def test_unknown_keys_are_rejected_naming_the_key(override, fragment):
    with pytest.raises(ValueError, match="unknown config key") as err:
        apply_overrides(NumberingConfig(), [override])
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.steps=1.5", "int"),
        ("train.steps=ten", "int"),
        ("train.lr=fast", "float"),
        ("data.augment=maybe", "bool"),
        ("model.name=resnet", "one of"),
        ("device=tpu", "one of"),
        ("train.lr_milestones=3,4", "list of int"),
        ("train.steps=none", "int"),
    ],
)
def test_wrong_types_are_rejected_naming_key_and_type(override, expected):
    key = override.split("=")[0]
    with pytest.raises(ValueError) as err:
        apply_overrides(NumberingConfig(), [override])
    assert f"'{key}'" in str(err.value) and expected in str(err.value)


def test_malformed_override_and_section_assignment_are_rejected():
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(NumberingConfig(), ["train.steps"])
    with pytest.raises(ValueError, match="is a section"):
        apply_overrides(NumberingConfig(), ["train=3"])


def test_dict_round_trip_and_type_checks():
    cfg = apply_overrides(NumberingConfig(), ["train.steps=7", "model.name=dspn"])
    data = json.loads(json.dumps(config_to_dict(cfg)))
    assert config_from_dict(NumberingConfig, data) == cfg
    with pytest.raises(ValueError, match="'train.steps'"):
        config_from_dict(NumberingConfig, {"train": {"steps": "7"}})
    with pytest.raises(ValueError, match="'train.steps'"):
        config_from_dict(NumberingConfig, {"train": {"steps": True}})
    with pytest.raises(ValueError, match="unknown config key 'data.size'"):
        config_from_dict(NumberingConfig, {"data": {"size": 3}})
    assert config_from_dict(NumberingConfig, {"train": {"lr": 1}}).train.lr == 1.0  # ints are valid floats


def test_config_diff_names_changed_keys():
    a = config_to_dict(NumberingConfig())
    b = config_to_dict(apply_overrides(NumberingConfig(), ["model.iters=3"]))
    assert config_diff(a, a) == [] and config_diff(a, b) == ["model.iters: 20 != 3"]


def test_every_preset_loads_into_its_registered_experiment():
    assert {"numbering-smoke", "numbering-small", "numbering-paper"} <= set(preset_names())
    for name in preset_names():
        data = read_preset(name)
        experiment = EXPERIMENTS[data["experiment"]]
        cfg = load_config(experiment.config_type, name)
        assert isinstance(cfg, ExperimentConfig) and cfg.experiment == experiment.name


def test_paper_preset_has_the_papers_hyperparameters():
    cfg = load_config(NumberingConfig, "numbering-paper")
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.lr, cfg.train.eval_every) == (50000, 128, 1e-3, 500)
    assert (cfg.data.set_size, cfg.data.classes, cfg.data.val_size, cfg.data.test_size) == (64, 4, 6400, 64000)
    assert (cfg.model.hidden_dim, cfg.model.iters, cfg.model.momentum, cfg.model.grad_clip) == (256, 20, 0.9, 40.0)


def test_unknown_preset_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        read_preset("no-such-preset")
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"experiment": "numbering", "train": {"steps": 3}}))
    assert load_config(NumberingConfig, str(path)).train.steps == 3


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.grad_clip=-1", "train.grad_clip': expected float > 0 or None"),
        ("train.grad_clip=0", "train.grad_clip': expected float > 0 or None"),
        ("train.lr_gamma=-1", "train.lr_gamma': expected float > 0"),
        ("train.steps=0", "train.steps': expected int >= 1"),
        ("train.steps=-5", "train.steps': expected int >= 1"),
        ("train.eval_every=0", "train.eval_every': expected int >= 1"),
        ("train.checkpoint_every=0", "train.checkpoint_every': expected int >= 1"),
        ("train.eval_batch_size=0", "train.eval_batch_size': expected int >= 1"),
        ("train.lr=-1", "train.lr': expected float > 0"),
        ("train.lr=nan", "train.lr': expected float > 0"),
        ("train.lr=inf", "train.lr': expected float > 0"),
        ("train.lr_milestones=[0,5]", "train.lr_milestones[0]': expected int >= 1"),
        ("seed=-1", "seed': expected int >= 0"),
        ("model.heads=0", "model.heads': expected int >= 1"),
        ("model.layers=0", "model.layers': expected int >= 1"),
        ("model.heads=3", "model.heads': must divide model.hidden_dim=16 for a transformer"),
        ("model.momentum=1", "model.momentum': expected float in [0, 1)"),
        ("data.set_size=0", "data.set_size': expected int >= 1"),
    ],
)
def test_out_of_range_settings_name_the_key_and_what_is_allowed(override, expected):
    name = ["model.name=transformer_pe"] if override.startswith("model.heads") else []
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_config(NumberingConfig, "numbering-smoke", [*name, override])


def test_check_config_catches_a_config_built_in_code():
    from idspn_experiments.engine.config import check_config

    cfg = NumberingConfig()
    cfg.train.steps = -1
    with pytest.raises(ValueError, match="train.steps"):
        check_config(cfg)
    with pytest.raises(ValueError, match="train.grad_clip"):
        config_from_dict(NumberingConfig, {"train": {"grad_clip": -1.0}})
