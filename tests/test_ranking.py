import itertools

import pytest
import torch
from torch._inductor.utils import run_and_get_code
from torch._subclasses.fake_tensor import FakeTensorMode

import idspn.ranking
from idspn.ranking import (
    COUNTING_MAX_COMPILED,
    ONE_HOT_MAX_COMPILED,
    SORT_BACKENDS,
    _row_fingerprints,
    canonical_keys,
    copy_first_occurrences_,
    descending_ranks,
    duplicate_index,
    fingerprint_table,
    get_sort_backend,
    lookup_by_rank,
    set_sort_backend,
    sort_descending,
    use_sort_backend,
)


@pytest.fixture(params=SORT_BACKENDS)
def sort_backend(request):
    with use_sort_backend(request.param):
        yield request.param


def _reference_ranks(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of torch's stable descending sort: the rank of every element, ties by position."""
    perm = torch.sort(x, dim=dim, descending=True, stable=True).indices
    shape = [x.shape[d] if d == dim % x.dim() else 1 for d in range(x.dim())]
    positions = torch.arange(x.shape[dim]).view(shape).expand_as(perm)
    return torch.empty_like(perm).scatter_(dim, perm, positions)


def _with_ties(shape):
    """Values from a small range, so that many are exactly equal; +0.0 and -0.0 among them."""
    x = torch.randint(-2, 3, shape).float()
    return torch.where(torch.rand(shape) < 0.2, torch.tensor(-0.0), x)


# Sets counted in eager mode on CPU (up to 12, or 28 with the torch backend) and sorted ones.
@pytest.mark.parametrize("n", [1, 5, 12, 13, 28, 29, 40, 64])
def test_ranks_are_the_stable_descending_order(n, sort_backend):
    x = _with_ties((3, n, 7))
    assert torch.equal(descending_ranks(x), _reference_ranks(x, 1))
    x = torch.randn(2, 4, n)
    assert torch.equal(descending_ranks(x, dim=-1), _reference_ranks(x, -1))


@pytest.mark.parametrize("shape, dim", [((7,), 0), ((2, 3, 20, 4), 2), ((4, 6), -1), ((3, 5, 2), 0)])
def test_ranks_along_any_dim_of_any_tensor(shape, dim, sort_backend):
    x = _with_ties(shape)
    assert torch.equal(descending_ranks(x, dim), _reference_ranks(x, dim))


@pytest.mark.parametrize("n", [6, 40, COUNTING_MAX_COMPILED + 2])  # counted, then sorted (a custom op)
def test_compiled_ranks_count_pairs_and_equal_eager(n):
    x = _with_ties((2, n, 3))
    compiled = torch.compile(descending_ranks, fullgraph=True)
    assert torch.equal(compiled(x), _reference_ranks(x, 1))


@pytest.mark.parametrize("n", [5, 40])
def test_lookup_by_rank_gathers_the_table_and_is_differentiable_in_it(n, sort_backend):
    x = _with_ties((3, n, 4))
    table = torch.randn(1, n, 4, dtype=torch.float64, requires_grad=True)
    expected = table.expand(3, n, 4).gather(1, _reference_ranks(x, 1))
    got = lookup_by_rank(x, table)
    assert torch.equal(got, expected)
    v = torch.randn_like(got)
    (g,) = torch.autograd.grad((got * v).sum(), table)
    (r,) = torch.autograd.grad((expected * v).sum(), table)
    assert torch.allclose(g, r)


@pytest.mark.parametrize("n", [5, 40])
@pytest.mark.parametrize("batched", ["keys", "table", "both"])
def test_lookup_by_rank_under_vmap_over_the_keys_the_table_or_both(n, batched, sort_backend):
    x = _with_ties((4, 3, n, 2))  # 4 vmapped calls on (3, n, 2) keys
    tables = torch.randn(4, 1, n, 2)
    expected = torch.stack([lookup_by_rank(x[i], tables[i]) for i in range(4)])
    if batched == "keys":
        got = torch.func.vmap(lambda k: lookup_by_rank(k, tables[0]))(x)
        expected = torch.stack([lookup_by_rank(x[i], tables[0]) for i in range(4)])
    elif batched == "table":  # e.g. vmap over an ensemble of FSPool weights
        got = torch.func.vmap(lambda t: lookup_by_rank(x[0], t))(tables)
        expected = torch.stack([lookup_by_rank(x[0], tables[i]) for i in range(4)])
    else:
        got = torch.func.vmap(lookup_by_rank)(x, tables)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("n", "dtype"),  # a one-hot sum up to ONE_HOT_MAX_COMPILED (ranks counted in the keys' dtype), then a gather
    [(5, torch.float32), (8, torch.float32), (8, torch.bfloat16), (9, torch.float32), (40, torch.float32)],
)
def test_compiled_lookup_by_rank_equals_the_gather_and_its_gradient(n, dtype):
    x = _with_ties((3, n, 4)).to(dtype)
    table = torch.randn(1, n, 4, requires_grad=True)
    expected = table.expand(3, n, 4).gather(1, _reference_ranks(x, 1))
    v = torch.randn_like(expected)

    def forward_and_backward():
        got = torch.compile(lookup_by_rank, fullgraph=True)(x, table)
        return got, torch.autograd.grad((got * v).sum(), table)[0]

    (got, g), code = run_and_get_code(forward_and_backward)  # the forward's and the backward's kernels
    assert torch.equal(got, expected)
    (r,) = torch.autograd.grad((expected * v).sum(), table)
    assert torch.allclose(g, r)
    # The point of the one-hot sum: a backward pass without the gather's gradient, a scatter-add
    # (inductor may leave it to an eager kernel or write one of its own, depending on the state of
    # the process, so any scatter counts), which longer sets' gather still has.
    assert ("scatter" in "\n".join(code)) == (n > ONE_HOT_MAX_COMPILED)


def test_the_sort_backend_is_one_of_the_named_ones():
    previous = set_sort_backend("torch")
    try:
        assert get_sort_backend() == "torch"
    finally:
        assert set_sort_backend(previous) == "torch"
    with pytest.raises(ValueError, match="name must be one of"):
        set_sort_backend("cuda")
    assert get_sort_backend() == previous
    with pytest.raises(RuntimeError), use_sort_backend("torch"):
        assert get_sort_backend() == "torch"
        raise RuntimeError
    assert get_sort_backend() == previous  # restored on the way out, also after an error


@pytest.mark.parametrize("n", [3, 40])
def test_sort_descending_gives_the_sorted_values(n, sort_backend):
    x = _with_ties((4, 5, n))
    assert torch.equal(sort_descending(x), torch.sort(x, dim=-1, descending=True).values)


def test_lookup_by_rank_rejects_a_table_that_does_not_fit():
    x = torch.randn(2, 5, 3)
    for table in (torch.randn(1, 4, 3), torch.randn(2, 5), torch.randn(3, 5, 3), torch.ones(1, 5, 3, dtype=torch.long)):
        with pytest.raises(ValueError, match="table"):
            lookup_by_rank(x, table)
    with pytest.raises(ValueError, match="dim"):
        descending_ranks(x, dim=3)
    with pytest.raises(ValueError, match="floating"):
        descending_ranks(torch.ones(2, 3, dtype=torch.long))


def test_duplicate_index_points_every_row_at_its_first_equal_row():
    x = torch.randn(2, 6, 3)
    x[0, 4] = x[0, 1]
    x[0, 5] = x[0, 1]
    x[1, 3] = x[1, 0]
    x[1, 2] = x[1, 2].nextafter(torch.tensor(1e9))  # one ulp away from nothing: stays itself
    x[0, 3] = x[0, 2].clone()
    x[0, 2, 1], x[0, 3, 1] = 0.0, -0.0  # equal in value, not in bits
    expected = torch.tensor([[0, 1, 2, 2, 1, 1], [0, 1, 2, 0, 4, 5]])
    assert torch.equal(duplicate_index(x), expected)
    compiled = torch.compile(duplicate_index, fullgraph=True)
    assert torch.equal(compiled(x), expected)


def test_duplicate_index_never_merges_different_rows():
    # Rows one ulp apart in one feature, NaN rows (NaN != NaN) and float64 rows stay apart.
    base = torch.randn(1, 1, 5, dtype=torch.float64).expand(1, 8, 5).clone()
    for i in range(1, 8):
        base[0, i, i % 5] = base[0, 0, i % 5].nextafter(torch.tensor(float(i), dtype=torch.float64) * 1e9)
    base[0, 7] = float("nan")
    index = duplicate_index(base)
    assert torch.equal(index[0, :6], torch.arange(6))
    assert index[0, 7] == 7


def test_duplicate_index_finds_duplicates_among_structured_rows():
    # Rows of 0s and 1s, and one-hot class + one-hot ID rows as the simplex projection makes them:
    # a fingerprint linear in the word's position would give (1, 0, 0, 1) and (0, 1, 1, 0), or
    # (class 0, ID 1) and (class 1, ID 0), the same print, and the earlier row would hide the
    # later one's true duplicate.
    x = torch.tensor([[[1.0, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0]]])
    assert torch.equal(duplicate_index(x), torch.tensor([[0, 1, 1]]))
    rows = torch.tensor(list(itertools.product([0.0, 1.0], repeat=12)))  # (4096, 12)
    assert torch.equal(duplicate_index(rows.unsqueeze(0)), torch.arange(len(rows)).unsqueeze(0))
    onehot = torch.zeros(4, 64, 68)  # class c (4 dims), ID j (64 dims) at position j of set c
    onehot[:, :, :4] = torch.eye(4).unsqueeze(1)
    onehot[:, :, 4:] = torch.eye(64).roll(1, dims=0)  # ID j - 1 at position j
    sets = onehot.transpose(0, 1).reshape(1, 256, 68)  # every (class, ID) pair once
    sets = torch.cat([sets, sets.flip(1)], dim=1)  # then each again, in reverse
    expected = torch.cat([torch.arange(256), torch.arange(255, -1, -1)]).unsqueeze(0)
    assert torch.equal(duplicate_index(sets), expected)
    assert torch.equal(torch.compile(duplicate_index, fullgraph=True)(sets), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_row_fingerprints_are_the_same_eager_and_compiled(dtype):
    x = torch.randn(3, 7, 5).to(dtype)
    x[0, 1, 2], x[1, 2, 0] = -0.0, float("inf")
    eager = _row_fingerprints(x)
    assert eager.dtype == torch.long and eager.shape == (3, 7, 3) and (eager.abs() < 2**53).all()
    assert torch.equal(torch.compile(_row_fingerprints, fullgraph=True)(x), eager)


def test_canonical_keys_copy_the_first_occurrence_exactly_eager_and_compiled():
    h = torch.randn(2, 5, 4)
    duplicates = torch.tensor([[0, 1, 1, 3, 0], [0, 1, 2, 3, 4]])
    expected = h.gather(1, duplicates.unsqueeze(-1).expand_as(h))
    assert torch.equal(canonical_keys(h, duplicates), expected)
    assert torch.equal(torch.compile(canonical_keys, fullgraph=True)(h, duplicates), expected)
    assert torch.equal(canonical_keys(h, None), h)


def _sets_with_duplicates():
    h = torch.randn(2, 5, 4)
    duplicates = torch.tensor([[0, 1, 1, 3, 0], [0, 1, 2, 3, 4]])
    return h, duplicates, canonical_keys(h, duplicates)


def test_copy_first_occurrences_changes_the_copies_only_in_place_eager_and_compiled():
    h, duplicates, expected = _sets_with_duplicates()
    for copy in (copy_first_occurrences_, torch.compile(copy_first_occurrences_, fullgraph=True)):
        got = h.clone()
        copy(got, duplicates)
        assert torch.equal(got, expected)
    untouched = h.clone()
    copy_first_occurrences_(untouched, torch.arange(5).expand(2, 5))  # no duplicates: nothing moves
    assert torch.equal(untouched, h)


def test_copy_first_occurrences_under_vmap_changes_the_batched_tensor():
    h, duplicates, expected = _sets_with_duplicates()
    stacked = h.unsqueeze(0).repeat(3, 1, 1, 1).movedim(0, 2)  # (B, N, 3, L): batched along dim 2
    torch.func.vmap(copy_first_occurrences_, in_dims=(2, None), out_dims=None)(stacked, duplicates)
    assert torch.equal(stacked.movedim(2, 0), expected.expand(3, -1, -1, -1))
    many = torch.stack([duplicates, torch.arange(5).expand(2, 5)])  # (2, B, N): one per batch entry
    both = h.unsqueeze(0).repeat(2, 1, 1, 1)
    torch.func.vmap(copy_first_occurrences_, out_dims=None)(both, many)
    assert torch.equal(both[0], expected) and torch.equal(both[1], h)
    with pytest.raises(ValueError, match="h must be batched"):
        torch.func.vmap(copy_first_occurrences_, in_dims=(None, 0), out_dims=None)(h.clone(), many)


def test_copy_first_occurrences_rejects_a_mismatched_index_and_a_tensor_that_needs_grad():
    h, duplicates, _ = _sets_with_duplicates()
    with pytest.raises(ValueError, match="duplicates must be an integer tensor"):
        copy_first_occurrences_(h, duplicates[0])
    with pytest.raises(ValueError, match="duplicates must be an integer tensor"):
        copy_first_occurrences_(h, duplicates.float())
    with pytest.raises(ValueError, match="must not require grad"):
        copy_first_occurrences_(h.requires_grad_(), duplicates)


def test_an_empty_set_has_empty_ranks_lookups_and_duplicates():
    from idspn.ranking import duplicate_index

    x = torch.zeros(2, 0, 3)
    table = torch.zeros(1, 0, 3, requires_grad=True)
    ranks = descending_ranks(x)
    assert ranks.shape == (2, 0, 3) and ranks.dtype == torch.long
    assert lookup_by_rank(x, table).shape == (2, 0, 3)
    assert duplicate_index(x).shape == (2, 0) and duplicate_index(x).dtype == torch.long


def _rows_with_duplicates() -> torch.Tensor:
    x = torch.randn(3, 7, 5)
    x[:, 4] = x[:, 1]
    x[0, 6] = x[0, 1]
    x[2, 5] = x[2, 0]
    return x


def test_a_fingerprint_table_finds_the_duplicates_the_cache_finds():
    x = _rows_with_duplicates()  # five float32 features: ten 16-bit words per row
    expected = torch.tensor([[0, 1, 2, 3, 1, 5, 1], [0, 1, 2, 3, 1, 5, 6], [0, 1, 2, 3, 1, 0, 6]])
    assert torch.equal(duplicate_index(x), expected)
    assert torch.equal(duplicate_index(x, fingerprint_table(10)), expected)
    assert torch.equal(duplicate_index(x, fingerprint_table(64)), expected)  # longer: its first rows
    compiled = torch.compile(duplicate_index, fullgraph=True)
    assert torch.equal(compiled(x, fingerprint_table(10)), expected)
    assert fingerprint_table(10).dtype == torch.int64 and fingerprint_table(10).shape == (10, 3)
    for table in (fingerprint_table(9), fingerprint_table(10).double(), fingerprint_table(10)[:, :2]):
        with pytest.raises(ValueError, match="table must be an integer"):
            duplicate_index(x, table)
    with pytest.raises(ValueError, match="table must be on the rows' device"):
        duplicate_index(x, fingerprint_table(10).to("meta"))
    for words in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="words must be a positive int"):
            fingerprint_table(words)


def test_a_fake_call_leaves_no_fake_multipliers_for_later_real_calls(monkeypatch):
    monkeypatch.setattr(idspn.ranking, "_MULTIPLIERS", {})
    x = _rows_with_duplicates()
    with FakeTensorMode(allow_non_fake_inputs=True):  # e.g. torch.export or make_fx tracing the encoder
        duplicate_index(torch.empty(3, 7, 5))
    assert all(type(t) is torch.Tensor for t in idspn.ranking._MULTIPLIERS.values())
    assert duplicate_index(x)[0].tolist() == [0, 1, 2, 3, 1, 5, 1]
