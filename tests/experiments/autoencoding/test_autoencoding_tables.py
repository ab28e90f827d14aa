import pytest

from idspn_experiments.autoencoding.config import AutoencodingConfig
from idspn_experiments.autoencoding.tables import (
    BUDGET_GRIDS,
    GridPoint,
    autoencoding_plan,
    grid_points,
    paper_loss,
    run_cost,
)
from idspn_experiments.engine.config import load_config


def test_small_budget_is_the_documented_sub_grid():
    points = set(grid_points("small"))
    main = {
        GridPoint(n, d, it, k)
        for n, d in ((2, 2), (4, 4), (8, 8), (4, 16))
        for it in (10, 20)
        for k in ("idspn-mom", "idspn", "dspn")
    }
    pooling = {GridPoint(8, 8, it, k) for it in (10, 20) for k in ("idspn-mom-sum", "idspn-mom-mean")}
    assert points == main | pooling and len(grid_points("small")) == 28


def test_paper_budget_is_the_full_grid():
    points = grid_points("paper")
    assert len(points) == len(set(points)) == 25 * 3 * 5
    assert {p.set_size for p in points} == {p.set_dim for p in points} == {2, 4, 8, 16, 32}


def test_run_keys_do_not_depend_on_the_budget():
    assert GridPoint(8, 8, 20, "dspn").key == "n8-d8/dspn/it20"
    small, paper = autoencoding_plan("small"), autoencoding_plan("paper")
    assert {p.key for p in small} <= {p.key for p in paper}
    by_key = {p.key: p for p in paper}
    for plan in small:  # same configuration, only the budget's preset differs
        assert plan.overrides == by_key[plan.key].overrides and plan.preset == "autoencoding-small"
    with pytest.raises(ValueError, match="budget"):
        grid_points("huge")


def test_every_small_budget_cell_has_the_papers_number():
    for p in grid_points("small"):
        assert paper_loss(p.set_size, p.set_dim, p.kind, p.iters) is not None, p
    # two cells quoted in the text of Appendix E.2 ((n, d) = (8, 8) at 40 iterations: Sum 6.4e-2, FSPool 2.1e-3)
    assert paper_loss(8, 8, "idspn-mom-sum", 40) == (6.4e-2, 3e-3)
    assert paper_loss(8, 8, "idspn-mom", 40) == (2.1e-3, 2e-4)


def test_cost_orders_runs_like_measured_step_times():
    def cost(*overrides):
        return run_cost(load_config(AutoencodingConfig, "autoencoding-small", list(overrides)))

    dspn, idspn = cost("model.backward=unroll", "model.momentum=0.0"), cost()
    assert dspn > 1.5 * idspn  # DSPN backpropagates through every step
    assert cost("model.iters=40") > idspn > cost("model.iters=10") > cost("model.iters=10", "model.pooling=sum")
    assert cost("data.set_size=2", "data.set_dim=2") < idspn


def test_budget_notes_state_the_sizes():
    assert "750 steps" in BUDGET_GRIDS["small"].note and "8 seeds" in BUDGET_GRIDS["paper"].note
