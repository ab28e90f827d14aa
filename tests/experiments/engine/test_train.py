import json
import math

import pytest
import torch

from idspn_experiments.engine.config import apply_overrides, load_config
from idspn_experiments.engine.train import StepBatchSampler, adam, evaluate, fit, learning_rate, load_run_result
from idspn_experiments.numbering.config import NumberingConfig
from idspn_experiments.numbering.task import NUMBERING


def _cfg(*overrides):
    return load_config(NumberingConfig, "numbering-smoke", list(overrides))


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in lines]


# --- data order --------------------------------------------------------------------------------


def test_batches_depend_only_on_seed_and_step():
    full = list(StepBatchSampler(10, 4, seed=1, start=0, stop=8))
    assert list(StepBatchSampler(10, 4, seed=1, start=5, stop=8)) == full[5:]
    assert list(StepBatchSampler(10, 4, seed=2, start=0, stop=8)) != full
    stream = [i for batch in full[:5] for i in batch]  # 20 positions = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))


def test_ranks_split_each_global_batch():
    ranks = [list(StepBatchSampler(10, 4, seed=0, start=0, stop=3, rank=r, world_size=2)) for r in range(2)]
    whole = StepBatchSampler(10, 4, seed=0, start=0, stop=3)
    for step in range(3):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(whole.global_batch(step))
    with pytest.raises(ValueError, match="batch_size"):
        StepBatchSampler(10, 3, seed=0, start=0, stop=1, world_size=2)


def test_learning_rate_schedule():
    cfg = _cfg("train.lr=1.0", "train.warmup_steps=4", "train.lr_milestones=[10, 20]", "train.lr_gamma=0.1")
    assert [learning_rate(s, cfg) for s in (0, 3, 9)] == [0.25, 1.0, 1.0]
    assert learning_rate(10, cfg) == pytest.approx(0.1) and learning_rate(25, cfg) == pytest.approx(0.01)


# --- evaluation --------------------------------------------------------------------------------


def test_adam_is_fused_where_torch_has_the_kernel_and_makes_the_loops_update():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    start = [p.detach().clone() for p in params]
    fused, loop = adam(params, lr=1e-2), torch.optim.Adam(copies, lr=1e-2)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    for step in range(3):
        for p, c in zip(params, copies, strict=True):
            p.grad = torch.randn_like(p, generator=torch.Generator().manual_seed(step))
            c.grad = p.grad.clone()
        fused.step(), loop.step()
    for p, c, p0 in zip(params, copies, start, strict=True):
        torch.testing.assert_close(p, c)
        assert not torch.equal(p, p0)
    on_meta = adam([torch.nn.Parameter(torch.empty(2, device="meta"))], lr=1e-3)
    assert not on_meta.defaults["fused"]  # no fused kernel there: the per-tensor loop


def test_evaluate_is_deterministic_and_leaves_the_rng_alone():
    cfg = _cfg()
    data = NUMBERING.build_data(cfg)
    model = NUMBERING.build_model(cfg)  # iDSPN: draws a random initial set at every forward
    torch.manual_seed(5)
    a = evaluate(NUMBERING, model, data.val, cfg)
    after = torch.rand(1)
    torch.manual_seed(5)
    b = evaluate(NUMBERING, model, data.val, cfg)
    assert a == b and torch.equal(after, torch.rand(1))
    assert set(a) == {"accuracy", "element_accuracy", "loss"}


# --- the loop ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["idspn", "transformer_random_pe"])
def test_killed_and_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, model):
    # augmentation and the models' random initial sets / random PE all draw from the training stream
    cfg = _cfg(
        f"model.name={model}", "train.steps=12", "train.eval_every=3", "train.checkpoint_every=4", "data.augment=true"
    )
    whole = fit(NUMBERING, cfg, tmp_path / "whole", progress=False)
    assert fit(NUMBERING, cfg, tmp_path / "killed", progress=False, stop_at_step=10) is None  # last.pt at step 8
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["step"] == 8
    resumed = fit(NUMBERING, cfg, tmp_path / "killed", resume=True, progress=False)
    assert resumed.test == whole.test and resumed.val == whole.val and resumed.best_step == whole.best_step
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _records(tmp_path / "whole") == _records(tmp_path / "killed")  # logs truncated and rewritten


def test_best_model_is_selected_by_validation_metric(tmp_path):
    cfg = _cfg("model.name=bilstm", "train.steps=12", "train.eval_every=2", "train.lr=0.01")
    result = fit(NUMBERING, cfg, tmp_path, progress=False)
    vals = [r for r in _records(tmp_path) if r["split"] == "val"]
    assert [r["step"] for r in vals] == [2, 4, 6, 8, 10, 12]
    best = max(vals, key=lambda r: (r["accuracy"], -r["step"]))  # the first of equal maxima
    assert result.best_step == best["step"] and result.val["accuracy"] == best["accuracy"]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["step"] == best["step"]
    assert load_run_result(tmp_path).test == result.test
    # the test metrics are those of the selected model
    model = NUMBERING.build_model(cfg)
    model.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True)["model"])
    assert evaluate(NUMBERING, model, NUMBERING.build_data(cfg).test, cfg) == result.test


def test_select_none_reports_the_last_model(tmp_path):
    cfg = _cfg("model.name=deepsets", "train.steps=4", "train.eval_every=2", "train.select_metric=none")
    result = fit(NUMBERING, cfg, tmp_path, progress=False)
    assert result.best_step == 4 and torch.load(tmp_path / "best.pt", weights_only=True)["step"] == 4


def test_same_seed_same_result_and_resume_checks_the_config(tmp_path):
    cfg = _cfg("model.name=deepsets", "train.steps=4")
    a = fit(NUMBERING, cfg, tmp_path / "a", progress=False)
    b = fit(NUMBERING, cfg, tmp_path / "b", progress=False)
    assert a.test == b.test
    with pytest.raises(ValueError, match="config differs"):
        fit(NUMBERING, apply_overrides(cfg, ["train.lr=0.5"]), tmp_path / "a", resume=True, progress=False)
    with pytest.raises(ValueError, match="cfg.experiment"):
        fit(NUMBERING, apply_overrides(cfg, ["experiment=other"]), tmp_path / "c", progress=False)


def test_overwrite_false_refuses_a_folder_that_holds_a_run_and_lets_it_resume(tmp_path):
    cfg = _cfg("model.name=deepsets", "train.steps=4", "train.checkpoint_every=2")
    assert fit(NUMBERING, cfg, tmp_path, progress=False, stop_at_step=3) is None  # last.pt at step 2
    (tmp_path / "last.pt").rename(tmp_path / "last.pt.prev")  # a run killed between the two renames
    records = _records(tmp_path)
    with pytest.raises(ValueError, match=r"already holds a run \(last.pt.prev\)"):
        fit(NUMBERING, cfg, tmp_path, progress=False, overwrite=False)
    assert _records(tmp_path) == records and not (tmp_path / "result.json").exists()  # nothing touched
    notices = []
    resumed = fit(NUMBERING, cfg, tmp_path, resume=True, progress=False, overwrite=False, notify=notices.append)
    assert resumed.steps == 4 and notices == []  # resumed from last.pt.prev: no "training from step 0"


def test_resume_auto_continues_a_checkpoint_if_there_is_one_and_says_nothing_otherwise(tmp_path):
    cfg = _cfg("model.name=deepsets", "train.steps=4", "train.checkpoint_every=2")
    notices = []
    whole = fit(NUMBERING, cfg, tmp_path / "whole", progress=False)
    fresh = fit(NUMBERING, cfg, tmp_path / "fresh", resume="auto", progress=False, notify=notices.append)
    assert fresh.test == whole.test and notices == []  # no checkpoint: from step 0, silently
    assert fit(NUMBERING, cfg, tmp_path / "killed", progress=False, stop_at_step=3) is None  # last.pt at step 2
    resumed = fit(NUMBERING, cfg, tmp_path / "killed", resume="auto", progress=False, notify=notices.append)
    assert resumed.test == whole.test and notices == []
    assert _records(tmp_path / "whole") == _records(tmp_path / "killed")
    fit(NUMBERING, cfg, tmp_path / "said", resume=True, progress=False, notify=notices.append)
    assert len(notices) == 1 and "no checkpoint" in notices[0]  # resume=True says it starts over
    with pytest.raises(ValueError, match="resume must be"):
        fit(NUMBERING, cfg, tmp_path / "bad", resume="yes", progress=False)


def test_validation_does_not_change_training(tmp_path):
    often = fit(NUMBERING, _cfg("train.eval_every=1"), tmp_path / "often", progress=False)
    rarely = fit(NUMBERING, _cfg("train.eval_every=6"), tmp_path / "rarely", progress=False)

    def train(d):
        return [r for r in _records(d) if r["split"] == "train"]

    assert train(tmp_path / "often") == train(tmp_path / "rarely")
    assert often.val and rarely.val


def test_batches_reach_the_device_in_their_own_containers():
    from collections import namedtuple

    from idspn_experiments.engine.train import _to_device

    Pair = namedtuple("Pair", "images targets")
    batch = {"pair": Pair(torch.zeros(2), torch.ones(2)), "list": [torch.zeros(1)], "tuple": (torch.zeros(1), "id")}
    moved = _to_device(batch, torch.device("cpu"))
    assert isinstance(moved["pair"], Pair) and torch.equal(moved["pair"].targets, torch.ones(2))
    assert isinstance(moved["list"], list) and type(moved["tuple"]) is tuple and moved["tuple"][1] == "id"


def test_data_splits_must_have_a_length():
    from torch.utils.data import IterableDataset, TensorDataset

    from idspn_experiments.engine.spec import DataSplits

    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(1)

    with pytest.raises(ValueError, match=r"DataSplits\.train must be a map-style dataset"):
        DataSplits(train=Stream())
    with pytest.raises(ValueError, match=r"DataSplits\.test must be a map-style dataset.*Stream"):
        DataSplits(train=TensorDataset(torch.zeros(3)), test=Stream())
    assert DataSplits(train=TensorDataset(torch.zeros(3))).val is None


_SHORT = ("model.name=deepsets", "train.steps=4", "train.eval_every=2", "train.checkpoint_every=2")


def _splits(run_dir):
    return [(r["step"], r["split"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def test_resuming_a_finished_run_logs_its_test_once(tmp_path):
    first = fit(NUMBERING, _cfg(*_SHORT), tmp_path, progress=False)
    again = fit(NUMBERING, _cfg(*_SHORT), tmp_path, resume=True, progress=False)
    assert _splits(tmp_path) == [(1, "train"), (2, "train"), (2, "val"), (3, "train"), (4, "train")] + [
        (4, "val"),
        (4, "test"),
    ]
    assert again.test == first.test


def test_a_fresh_run_over_a_finished_one_leaves_nothing_of_it(tmp_path):
    fit(NUMBERING, _cfg(*_SHORT), tmp_path, progress=False)
    assert fit(NUMBERING, _cfg(*_SHORT, "train.lr=0.01"), tmp_path, progress=False, stop_at_step=1) is None
    assert load_run_result(tmp_path) is None and not (tmp_path / "best.pt").exists()
    assert _splits(tmp_path) == [(1, "train")]
    resumed = fit(NUMBERING, _cfg(*_SHORT, "train.lr=0.01"), tmp_path, resume=True, progress=False)
    assert resumed.config["train"]["lr"] == 0.01 and resumed.steps == 4


def test_an_empty_select_metric_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"'train\.select_metric': must name a validation metric"):
        fit(NUMBERING, _cfg(*_SHORT, "train.select_metric="), tmp_path, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_misspelled_select_metric_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"'train\.select_metric': 'acuracy' is not among .*'element_accuracy'"):
        fit(NUMBERING, _cfg(*_SHORT, "train.select_metric=acuracy"), tmp_path, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_select_metric_without_a_validation_split_is_ignored_as_before(tmp_path):
    from idspn_experiments.autoencoding.config import AutoencodingConfig
    from idspn_experiments.autoencoding.task import AUTOENCODING

    cfg = load_config(AutoencodingConfig, "autoencoding-smoke", ["train.select_metric=accuracy"])
    assert AUTOENCODING.build_data(cfg, False).val is None and "accuracy" not in AUTOENCODING.metrics
    assert fit(AUTOENCODING, cfg, tmp_path, progress=False).steps == cfg.train.steps  # the last model


def test_an_experiment_without_declared_metrics_checks_the_select_metric_at_the_first_validation(tmp_path):
    import dataclasses

    undeclared = dataclasses.replace(NUMBERING, metrics=())
    with pytest.raises(ValueError, match=r"'acuracy' is not among the validation metrics \['accuracy'"):
        fit(undeclared, _cfg(*_SHORT, "train.select_metric=acuracy"), tmp_path, progress=False)
    assert [split for _, split in _splits(tmp_path)][-1] == "val"  # it trained up to the validation


@pytest.mark.parametrize("name", ["numbering", "autoencoding"])
def test_the_declared_metrics_are_the_ones_a_validation_returns(name):
    from idspn_experiments.registry import get_experiment

    experiment = get_experiment(name)
    cfg = load_config(experiment.config_type, f"{name}-smoke")
    data = experiment.build_data(cfg, False)
    split = data.val if data.val is not None else data.test  # the same metrics on either split
    assert set(evaluate(experiment, experiment.build_model(cfg), split, cfg)) == set(experiment.metrics)


def test_a_selection_metric_that_is_always_nan_reports_the_last_validation(tmp_path):
    import dataclasses

    always_nan = dataclasses.replace(NUMBERING, summarize=lambda out, cfg: {"accuracy": float("nan"), "loss": 1.0})
    result = fit(always_nan, _cfg(*_SHORT), tmp_path, progress=False)
    assert result.best_step == 4 and result.val["loss"] == 1.0 and math.isnan(result.val["accuracy"])


def test_a_run_killed_in_its_test_evaluation_resumes_to_the_same_reported_validation(tmp_path, monkeypatch):
    # With an always-NaN selection metric the report falls back to the last validation, which must
    # survive a kill after the final checkpoint (during the test evaluation) and the resume after it.
    import dataclasses

    from idspn_experiments.engine import train

    always_nan = dataclasses.replace(NUMBERING, summarize=lambda out, cfg: {"accuracy": float("nan"), "loss": 1.0})
    cfg = _cfg(*_SHORT, "train.checkpoint_every=2")
    whole = fit(always_nan, cfg, tmp_path / "whole", progress=False)
    real = train.evaluate

    def killed_in_test(*args, desc="eval", **kwargs):
        if desc == "test":
            raise KeyboardInterrupt
        return real(*args, desc=desc, **kwargs)

    monkeypatch.setattr(train, "evaluate", killed_in_test)
    with pytest.raises(KeyboardInterrupt):
        fit(always_nan, cfg, tmp_path / "killed", progress=False)
    monkeypatch.setattr(train, "evaluate", real)
    resumed = fit(always_nan, cfg, tmp_path / "killed", resume="auto", progress=False)
    assert resumed.val["loss"] == whole.val["loss"] == 1.0 and math.isnan(resumed.val["accuracy"])
    assert torch.load(tmp_path / "killed" / "best.pt", weights_only=True)["val"]["loss"] == 1.0


def test_a_finished_run_without_its_checkpoint_is_not_overwritten(tmp_path):
    cfg = _cfg("model.name=deepsets", "train.steps=2")
    fit(NUMBERING, cfg, tmp_path, progress=False)
    (tmp_path / "last.pt").unlink()  # deleted to save space: result.json and best.pt remain
    before = (tmp_path / "result.json").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a run \(result.json, best.pt; no checkpoint"):
        fit(NUMBERING, cfg, tmp_path, progress=False, overwrite=False)
    assert (tmp_path / "result.json").read_bytes() == before


def test_a_checkpoint_that_is_not_a_training_state_is_refused_naming_it(tmp_path):
    import shutil

    cfg = _cfg("model.name=deepsets", "train.steps=4", "train.checkpoint_every=2")
    fit(NUMBERING, cfg, tmp_path, progress=False)
    shutil.copy(tmp_path / "last.pt", tmp_path / "kept.pt")
    shutil.copy(tmp_path / "best.pt", tmp_path / "last.pt")  # "restoring the checkpoint"
    with pytest.raises(ValueError, match=r"last.pt is not a resumable checkpoint.*Remove"):
        fit(NUMBERING, cfg, tmp_path, resume=True, progress=False)
    # with the checkpoint it replaced still there, the resume falls back to it, saying so
    (tmp_path / "kept.pt").rename(tmp_path / "last.pt.prev")
    notices = []
    resumed = fit(NUMBERING, cfg, tmp_path, resume=True, progress=False, notify=notices.append)
    assert resumed.steps == 4 and "is not a resumable checkpoint" in notices[0] and "last.pt.prev" in notices[0]


def test_a_split_smaller_than_the_number_of_processes_is_refused(tmp_path):
    import dataclasses

    from torch.utils.data import Subset

    from idspn_experiments.engine.distributed import DistContext
    from idspn_experiments.engine.train import _fit

    def one_val_example(cfg, progress):
        data = NUMBERING.build_data(cfg, progress)
        return dataclasses.replace(data, val=Subset(data.val, [0]))

    experiment = dataclasses.replace(NUMBERING, build_data=one_val_example)
    two = DistContext(rank=0, world_size=2, device=torch.device("cpu"))  # refused before any collective
    with pytest.raises(ValueError, match="the val split has 1 examples, fewer than the 2 processes"):
        _fit(experiment, _cfg(*_SHORT), tmp_path, two, False, False, None, print)
