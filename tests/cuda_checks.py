"""The core on CUDA: the same numbers as on CPU, compiled and with CUDA graphs, no host sync.

Not collected by the default test run (no GPU under CI); ``benchmarks/gpu_check.sh`` runs it where one is lent.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from idspn import IDSPN, Equivariance, FSEncoder, classify_equivariance, hungarian_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

N, D, L = 64, 64, 32


def _decoder(device, **kwargs):
    torch.manual_seed(0)
    enc = FSEncoder(4 + D, 32, L, set_size=N)
    return IDSPN(enc, N, D, iters=5, momentum=0.9, grad_clip=40.0, projection="simplex", fixed_dim=4, **kwargs).to(
        device
    )


def _inputs(device):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, L, generator=g)
    fixed = torch.nn.functional.one_hot(torch.randint(0, 4, (16, N), generator=g), 4).float()
    y0 = torch.randn(16, N, D, generator=g) * 0.1
    w = torch.randn(16, N, D, generator=g)
    return [t.to(device) for t in (z, fixed, y0, w)]


def _run(decoder, device):
    z, fixed, y0, w = _inputs(device)
    z.requires_grad_()
    y = decoder(z, init_set=y0, fixed=fixed)
    (y * w).sum().backward()
    return y.detach().cpu(), [z.grad.cpu()] + [p.grad.cpu() for p in decoder.parameters()]


@pytest.mark.parametrize("backward", ["approx", "unroll"])
def test_cuda_equals_cpu_forward_and_backward(backward):
    y_cpu, g_cpu = _run(_decoder("cpu", backward=backward), "cpu")
    y_gpu, g_gpu = _run(_decoder("cuda", backward=backward), "cuda")
    assert torch.allclose(y_cpu, y_gpu, atol=1e-4)
    for a, b in zip(g_cpu, g_gpu, strict=True):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("backward", ["approx", "unroll"])
@pytest.mark.parametrize("compile", [True, "reduce-overhead"])
def test_compiled_and_cuda_graphs_equal_eager(compile, backward):
    """Three training steps' worth of calls: CUDA-graph trees warm up, record, then replay."""
    y_eager, g_eager = _run(_decoder("cuda", backward=backward), "cuda")
    decoder = _decoder("cuda", backward=backward, compile=compile, check_finite=compile is True)
    for _ in range(3):
        decoder.zero_grad()
        y, g = _run(decoder, "cuda")
        assert torch.allclose(y_eager, y, atol=1e-4)
        for a, b in zip(g_eager, g, strict=True):
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


class _SyncCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)
        return func(*args, **(kwargs or {}))


def test_a_forward_syncs_once_with_the_check_and_never_without():
    z, fixed, _, _ = _inputs("cuda")
    counts = []
    for check in (True, False):
        decoder = _decoder("cuda", check_finite=check)
        with _SyncCounter() as counter, torch.no_grad():
            decoder(z, fixed=fixed)
        counts.append(counter.count)
    assert counts == [1, 0]


def test_exclusively_multiset_equivariant_on_cuda():
    torch.manual_seed(0)
    enc = FSEncoder(3, 16, 8).double().cuda()
    dec = IDSPN(enc, 6, 3, iters=5, momentum=0.9).double().cuda()
    z = torch.randn(1, 8, dtype=torch.float64, device="cuda")
    f = lambda y0: dec(z, init_set=y0.cuda().unsqueeze(0))[0].detach().cpu()  # noqa: E731
    assert classify_equivariance(f, set_size=6, set_dim=3) is Equivariance.EXCLUSIVELY_MULTISET


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hungarian_loss_in_half_precision(dtype):
    pred, target = torch.randn(4, 10, 19, device="cuda"), torch.randn(4, 10, 19, device="cuda")
    full = hungarian_loss(pred, target, "huber")
    half = hungarian_loss(pred.to(dtype), target.to(dtype), "huber")
    assert half.dtype == dtype and torch.allclose(half.float(), full, atol=2e-2, rtol=2e-2)


def test_compiled_first_the_decoders_graph_reads_only_cuda_tensors(monkeypatch):
    """Compiled before any eager call, no graph of the inner step takes a CPU tensor (which would be
    copied to the GPU in every step and keep CUDA graphs from capturing it)."""
    import idspn.ranking

    monkeypatch.setattr(idspn.ranking, "_MULTIPLIERS", {})
    devices = []

    def recording_backend(gm, example_inputs):
        devices.extend(t.device.type for t in example_inputs if isinstance(t, torch.Tensor))
        return gm.forward

    decoder = _decoder("cuda")
    z, fixed, y0, _ = _inputs("cuda")
    step = torch.compile(decoder.forward, backend=recording_backend)
    assert step(z, init_set=y0, fixed=fixed).device.type == "cuda"
    assert devices and set(devices) == {"cuda"}
