import pytest
import torch

from idspn_experiments.engine.config import load_config
from idspn_experiments.numbering.config import MODEL_NAMES, NumberingConfig
from idspn_experiments.numbering.data import one_hot_batch
from idspn_experiments.numbering.task import NUMBERING, numbering_eval_step, numbering_loss, sample_correct


def test_accuracy_ignores_which_instance_of_a_class_gets_which_id():
    labels = torch.tensor([[0, 0, 1, 1, 1]])
    target = torch.tensor([[0, 1, 0, 1, 2]])
    correct, element = sample_correct(torch.tensor([[1, 0, 2, 0, 1]]), target, labels, 2)  # swapped within class
    assert correct.tolist() == [True] and element.tolist() == [1.0]
    correct, element = sample_correct(torch.tensor([[0, 0, 0, 1, 2]]), target, labels, 2)  # duplicate ID in class 0
    assert correct.tolist() == [False] and element.item() == pytest.approx(0.8)
    correct, _ = sample_correct(torch.tensor([[0, 2, 1, 0, 1]]), target, labels, 2)  # right IDs, wrong classes
    assert correct.tolist() == [False]


def test_loss_matches_only_within_classes():
    cfg = load_config(NumberingConfig, "numbering-smoke", ["model.name=idspn"])
    data = NUMBERING.build_data(cfg)
    batch = {k: v[:4] for k, v in (("classes", data.train.classes), ("ids", data.train.ids))}
    _, targets, labels = one_hot_batch(batch, cfg.data.classes)

    class Oracle(torch.nn.Module):
        def __init__(self, pred):
            super().__init__()
            self.pred = pred

        def forward(self, x, iters=None):
            return self.pred

    # reversing the order of the elements of one class only: still a perfect prediction
    pred = targets.clone()
    for b in range(4):
        members = (labels[b] == 0).nonzero().flatten()
        pred[b, members] = targets[b, members.flip(0)]
    loss, _ = numbering_loss(Oracle(pred), batch, cfg, 1)
    assert loss.item() == 0.0
    assert numbering_eval_step(Oracle(pred), batch, cfg, 1)["accuracy"].tolist() == [1.0] * 4
    # a prediction that is only right when matched across classes is penalised
    swapped = targets[:, torch.arange(targets.shape[1]).roll(1)]
    assert numbering_loss(Oracle(swapped), batch, cfg, 1)[0].item() > 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_through_the_loss(name):
    cfg = load_config(NumberingConfig, "numbering-smoke", [f"model.name={name}", "data.augment=true"])
    data = NUMBERING.build_data(cfg)
    model = NUMBERING.build_model(cfg)
    batch = {"classes": data.train.classes[:8], "ids": data.train.ids[:8]}
    loss, _ = numbering_loss(model, batch, cfg, NUMBERING.inner_steps(cfg, 0))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)
