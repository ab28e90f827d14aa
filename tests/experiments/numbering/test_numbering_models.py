import pytest
import torch

from idspn import Equivariance, classify_equivariance
from idspn_experiments.engine.config import load_config
from idspn_experiments.numbering.config import MODEL_NAMES, NumberingConfig
from idspn_experiments.numbering.models import NUMBERING_MODELS, NumberingDSPN

CLASSES, SET_SIZE = 3, 6


def _model(name):
    cfg = load_config(
        NumberingConfig,
        "numbering-smoke",
        [f"model.name={name}", f"data.classes={CLASSES}", f"data.set_size={SET_SIZE}", "model.iters=5"],
    )
    torch.manual_seed(0)
    return NUMBERING_MODELS[name].build(cfg).double().eval()


def test_registry_covers_every_configurable_model():
    assert set(NUMBERING_MODELS) == set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_pairs_with_input_elements(name):
    model = _model(name)
    x = torch.nn.functional.one_hot(torch.randint(0, CLASSES, (2, SET_SIZE)), CLASSES).double()
    out = model(x)
    assert out.shape == (2, SET_SIZE, SET_SIZE) and torch.isfinite(out).all()
    if NUMBERING_MODELS[name].pairwise == "mse":  # DSPN/iDSPN: points on the simplex
        assert (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(2, SET_SIZE, dtype=out.dtype))


def _as_function(name):
    model = _model(name)
    if isinstance(model, NumberingDSPN):
        # The random initial set is drawn i.i.d. per element; for a deterministic test give every element
        # an initial value that is a fixed function of its input, so it permutes with the input.
        mix = torch.randn(CLASSES, SET_SIZE, dtype=torch.double, generator=torch.Generator().manual_seed(1))
        return lambda x: model(x[None], init_set=0.1 * torch.tanh(x @ mix)[None])[0]

    def f(x):
        torch.manual_seed(0)  # random PE: the same noise at every call, tied to positions
        return model(x[None])[0]

    return f


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_equivariance_is_the_one_the_paper_states(name):
    """Table 2's columns: DeepSets and the transformer without PE are set-equivariant, DSPN/iDSPN
    exclusively multiset-equivariant, the transformers with PE and the BiLSTM neither."""
    entry = NUMBERING_MODELS[name]
    expected = (
        Equivariance.SET
        if entry.set_equivariant
        else Equivariance.EXCLUSIVELY_MULTISET
        if entry.multiset_equivariant
        else Equivariance.NONE
    )
    found = classify_equivariance(_as_function(name), set_size=SET_SIZE, set_dim=CLASSES, trials=2, atol=1e-6)
    assert found == expected


def test_set_equivariant_models_cannot_separate_equal_inputs_but_idspn_can():
    x = torch.zeros(1, SET_SIZE, CLASSES, dtype=torch.double)
    x[..., 0] = 1  # every element of class 0: the target IDs are 0..N-1, all different
    out = _model("deepsets")(x)
    assert torch.allclose(out, out[:, :1].expand_as(out))
    ids = _model("idspn")(x).argmax(-1)
    assert len(set(ids[0].tolist())) > 1


def test_the_first_inner_step_starts_from_the_projected_initial_set():
    # The original code projects Y0 onto the simplex before the first step; project_init=False does not.
    from idspn import project_simplex

    model = _model("idspn")
    x = torch.nn.functional.one_hot(torch.randint(0, CLASSES, (2, SET_SIZE)), CLASSES).double()
    y0 = 0.1 * torch.randn(2, SET_SIZE, SET_SIZE, dtype=torch.double)
    decoder = model.decoder
    with torch.no_grad():
        z = model.input_encoder(x)
        got = decoder(z, init_set=y0, fixed=x, iters=1)
    start = project_simplex(y0).requires_grad_()
    g = decoder.encoder(torch.cat([x, start], -1))
    (grad,) = torch.autograd.grad(0.5 * (g - z).pow(2).sum(0).mean(), start)  # the original's objective
    norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    clipped = grad * (decoder.optimizer.grad_clip / norm).clamp(max=1.0)
    expected = project_simplex(start.detach() - (clipped + 0.9 * clipped))  # Nesterov's first step, lr 1
    assert torch.allclose(got, expected, atol=1e-10)
    decoder.project_init = False
    with torch.no_grad():
        assert not torch.allclose(decoder(z, init_set=y0, fixed=x, iters=1), got, atol=1e-4)
