"""Set decoders that predict a set by optimisation: iDSPN and DSPN.

Both decode a vector z ``(B, L)`` into a set Y ``(B, N, D)`` by minimising the inner objective
(Eq. 6-7, with the regulariser of Section 3)::

    L(Y) = 1/(2L) * ||g([F, Y]) - z||^2 + reg/2 * ||Y - Y0||^2        (per example)

with a fixed number of (projected, optionally Nesterov-accelerated) gradient steps from an initial
set Y0. ``F`` are optional fixed dims given by the caller (Section 3, used in Section 4.1) and g is a
permutation-invariant set encoder. The 1/L scale of the first term is the one the inner learning
rate 1.0 of the paper's experiments was tuned for (the original code's mean over latent dims); it
makes each example's inner gradient independent of the batch size. (The original code's regulariser
is a mean over the N x D entries of the set, ``0.1/2 * mean (Y - Y0)^2``: ``reg = 0.1 / (N * D)``
here; see the experiments' departures table.)

The forward pass is the same for every backward mode; they differ in how gradients reach z, the
encoder parameters and a learned Y0:

* ``"approx"`` (iDSPN, Eq. 9): backpropagate through one step of the inner update near the solution,
  i.e. the implicit gradient with the Hessian replaced by the identity. As in the original code the
  step is the last one taken, from Y_{T-1}; the output is Y_T. Memory and backward cost do not
  depend on ``iters``.
* ``"cg"``: implicit differentiation (Appendix D), solving ``(lr*H/gamma + I) u = v`` with a few
  batched conjugate-gradient steps on Hessian-vector products; ``gamma=None`` solves ``lr*H u = v``
  (the exact implicit gradient), ``gamma -> inf`` recovers ``"approx"``.
* ``"unroll"`` (DSPN): backpropagate through every inner step.

Everything is plain torch: the decoder works under autograd, ``torch.func`` and ``torch.compile``
and on any device. ``compile=True`` compiles one inner step (the loop stays in Python and calls it
``iters`` times); the inner loop itself makes no host synchronisation, and the one finiteness
check per forward can be switched off (``check_finite=False``) so that a forward makes none.

The file reads top-down: inner problem -> inner step and loop -> backward modes -> decoder.
"""

from __future__ import annotations

import functools
import math
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn

from .projections import project_simplex
from .set_encoders import FSPool, ModuleSetEncoder, SetEncoder, check_set

__all__ = [
    "IDSPN",
    "InnerDiagnostics",
    "InnerLoopDivergence",
    "BACKWARD_MODES",
    "INITS",
    "PROJECTIONS",
    "COMPILE_MODES",
    "compile_arguments",
]

BACKWARD_MODES = ("approx", "cg", "unroll")
INITS = ("random", "zeros", "learned")
PROJECTIONS: dict[str, Callable[[Tensor], Tensor]] = {"simplex": project_simplex}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Inductor options of a no-grad step compiled in mode "default" for the CPU. Inductor recomputes a
# pointwise intermediate inside every kernel that reads it unless it reads more than
# `realize_reads_threshold` buffers (4 by default). The iterate after a Nesterov step reads four (Y,
# the gradient, the momentum buffer, the clipping norm), and the simplex projection's pairwise pass
# reads it once per entry of its row, recomputing the whole step each time; at 3 inductor stores it
# once. A step autograd records keeps the default: there the stored intermediates cost more than the
# recomputation saved (docs/benchmarks.md, *Compile options*).
CPU_INDUCTOR_OPTIONS: dict[str, Any] = {"realize_reads_threshold": 3}


class InnerLoopDivergence(RuntimeError):
    """The inner optimisation produced NaN or inf from finite inputs (lower ``lr`` or set ``grad_clip``)."""


# --- the inner problem ---------------------------------------------------------------------------


def _per_example_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1)  # (B,)


@dataclass
class InnerProblem:
    """One decoder call's inner objective L(Y) (Eq. 6 with the Section 3 regulariser).

    Attributes:
        encoder: the set encoder g.
        z: ``(B, L)`` target encoding.
        init_set: ``(B, N, D)`` the initial set Y0 of the regulariser.
        fixed: ``(B, N, F)`` fixed leading dims of every element, or None.
        reg: regulariser weight lambda.
    """

    encoder: SetEncoder
    z: Tensor
    init_set: Tensor
    fixed: Tensor | None
    reg: float

    def _encoder_input(self, y: Tensor) -> Tensor:
        return y if self.fixed is None else torch.cat([self.fixed, y], dim=-1)  # (B, N, F + D)

    def _objective(self, residual: Tensor, y: Tensor) -> Tensor:
        """``(B,)`` L at ``y`` from its residual ``g(x) - z``."""
        value = residual.pow(2).sum(1) / (2 * residual.shape[1])
        return value + self.reg / 2 * (y - self.init_set).pow(2).flatten(1).sum(1) if self.reg else value

    def value(self, y: Tensor) -> Tensor:
        """``(B,)`` value of L at ``y``."""
        return self._objective(self.encoder(self._encoder_input(y)) - self.z, y)

    def _grad_and_residual(self, y: Tensor) -> tuple[Tensor, Tensor]:
        out, vjp = self.encoder.value_and_vjp(self._encoder_input(y))
        residual = out - self.z  # (B, L)
        grad = vjp(residual / residual.shape[1])  # (B, N, F + D); residual / L = dL/dg
        if self.fixed is not None:
            grad = grad[..., self.fixed.shape[-1] :]  # (B, N, D)
        if self.reg:
            grad = grad + self.reg * (y - self.init_set)
        return grad, residual

    def grad(self, y: Tensor) -> Tensor:
        """``(B, N, D)`` gradient of L at ``y``, differentiable in z, the encoder and Y0.

        Differentiable in ``y`` too when ``y`` requires grad (unrolled DSPN, Hessian products).
        """
        return self._grad_and_residual(y)[0]

    def value_and_grad(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``value(y)`` and ``grad(y)`` from one evaluation of the encoder."""
        grad, residual = self._grad_and_residual(y)
        return self._objective(residual, y), grad


# --- the inner step and loop ---------------------------------------------------------------------


@dataclass(frozen=True)
class InnerOptimizer:
    """Projected gradient descent with optional Nesterov momentum and per-example clipping.

    The update is the one of ``torch.optim.SGD(nesterov=True)`` applied to each example's set::

        g = clip(grad L(Y)),  v = momentum * v + g,  Y = proj(Y - lr * (g + momentum * v))
    """

    lr: float
    momentum: float
    grad_clip: float | None
    projection: Callable[[Tensor], Tensor] | None

    def clip(self, grad: Tensor) -> Tensor:
        """Scale each example's gradient down to norm ``grad_clip`` if it is longer."""
        if self.grad_clip is None:
            return grad
        norm = torch.linalg.vector_norm(grad, dim=(1, 2)).clamp(min=1e-12)  # (B,)
        return grad * (self.grad_clip / norm).clamp(max=1.0).view(-1, 1, 1)

    def project(self, y: Tensor) -> Tensor:
        return y if self.projection is None else self.projection(y)

    def update(self, y: Tensor, buf: Tensor | None, grad: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(Y, v)`` after one step with gradient ``grad``: clip, Nesterov momentum, projection."""
        grad = self.clip(grad)  # (B, N, D)
        if buf is not None:
            buf = self.momentum * buf + grad
            grad = grad + self.momentum * buf
        return self.project(y - self.lr * grad), buf

    def step(self, problem: InnerProblem, y: Tensor) -> Tensor:
        """One plain (projected) step ``proj(Y - lr * grad L(Y))``: the map Eq. 9 differentiates."""
        return self.project(y - self.lr * problem.grad(y))


def inner_step(
    problem: InnerProblem, optimizer: InnerOptimizer, y: Tensor, buf: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """One step of the inner loop from ``y`` with momentum buffer ``buf``: ``(Y_{t+1}, buf_{t+1})``.

    This is what ``IDSPN(compile=...)`` compiles (with ``fullgraph=True``): one step, called
    ``iters`` times, rather than the unrolled loop.
    """
    return optimizer.update(y, buf, problem.grad(y))


def final_step(
    problem: InnerProblem, optimizer: InnerOptimizer, y: Tensor, buf: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The last inner step from Y_{T-1} and the step Eq. 9 differentiates, on one evaluation of grad L.

    Returns:
        ``(Y_T, step)``: the last iterate (no gradient) and ``proj(Y_{T-1} - lr * grad L(Y_{T-1}))``,
        differentiable in z, the encoder and Y0 (not in the detached ``y``).
    """
    grad = problem.grad(y)  # (B, N, D), with a graph to the parameters when grad mode is on
    y_next, _ = optimizer.update(y, buf, grad.detach())
    return y_next, optimizer.project(y - optimizer.lr * grad)


_Step = TypeVar("_Step", bound=Callable[..., Any])

# Each decoder's compiled steps, dropped with the decoder (not copied with it by deepcopy or pickle).
_StepKey = tuple[str, str, str, bool]  # (function, mode, device type, grad mode)
_COMPILED: weakref.WeakKeyDictionary[nn.Module, dict[_StepKey, Callable[..., Any]]] = weakref.WeakKeyDictionary()


def _own_copy(function: _Step) -> _Step:
    """``function`` with a code object of its own.

    ``torch.compile`` keeps its compiled graphs, and counts recompilations against its limit, per
    code object; each decoder compiling its own copy gives it its own cache, so that many decoders
    in one process (a sweep, a test suite) never exhaust the limit, and the graphs go with the decoder.
    """
    code = function.__code__.replace()
    copy = types.FunctionType(code, function.__globals__, function.__name__, function.__defaults__)
    return cast(_Step, functools.update_wrapper(copy, function))


def compile_arguments(mode: str, device: torch.device, grad: bool = False) -> dict[str, Any]:
    """The keyword arguments besides ``fullgraph=True`` with which ``IDSPN(compile=mode)`` passes
    one inner step to ``torch.compile`` on ``device``, for steps run with grad mode on (``grad``:
    an unrolled DSPN's, the last step of ``backward="approx"``) or off (every other).

    ``mode`` alone, except in mode ``"default"`` on CPU without grad: there ``CPU_INDUCTOR_OPTIONS``,
    those of them this torch's inductor knows (``torch._inductor.list_options()``, as
    ``torch.compile`` documents), as ``options``. Pass the same to compile a model that calls the
    decoder, e.g. ``torch.compile(model, **compile_arguments("default", device))`` for inference.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"mode must be one of {COMPILE_MODES}, got {mode!r}")
    if mode == "default" and torch.device(device).type == "cpu" and not grad:
        import torch._inductor as inductor  # here, not at import: it takes a second

        known = set(inductor.list_options())
        options = {key: value for key, value in CPU_INDUCTOR_OPTIONS.items() if key in known}
        if options:
            return {"options": options}
    return {"mode": mode}


def _compiled(owner: nn.Module, function: _Step, mode: str, device: torch.device) -> _Step:
    """``torch.compile(function, fullgraph=True, **compile_arguments(mode, device, grad))`` with
    the grad mode it is called in, made once per decoder, device type and grad mode."""
    grad = torch.is_grad_enabled()
    steps = _COMPILED.setdefault(owner, {})
    key = (function.__name__, mode, device.type, grad)
    if key not in steps:
        step = torch.compile(_own_copy(function), fullgraph=True, **compile_arguments(mode, device, grad))
        steps[key] = _outputs_copied(step) if _runs_as_cuda_graph(mode, device) else step
    return cast(_Step, steps[key])


def _runs_as_cuda_graph(mode: str, device: torch.device) -> bool:
    """Whether inductor runs a step compiled in ``mode`` on ``device`` as a CUDA graph, by the
    options the mode sets (``torch._inductor.list_mode_options``, as ``torch.compile`` documents)."""
    import torch._inductor as inductor

    return device.type == "cuda" and bool(inductor.list_mode_options(mode).get("triton.cudagraphs", False))


def _outputs_copied(step: _Step) -> _Step:
    """``step`` with its output tensors copied out of the CUDA graph's memory.

    Every call of a compiled step from the inner loop is a new ``torch.compile`` invocation, hence
    (without pending backwards) a new generation of inductor's CUDA-graph trees, whose replay
    overwrites the outputs of the previous call: the very ``(y, buf)`` the loop passes in. A copy
    of two ``(B, N, D)`` tensors per step keeps them.
    """

    def run(*args: Any) -> Any:
        return tuple(None if t is None else t.clone() for t in step(*args))

    return cast(_Step, functools.update_wrapper(run, step))


# --- backward modes ------------------------------------------------------------------------------


def attach_approx_implicit_grad(y_star: Tensor, step: Tensor) -> Tensor:
    """Return Y* whose gradient is that of one inner step (Eq. 9; Eq. 10 with a projection).

    ``step`` is the last step the forward pass took, ``proj(Y_{T-1} - lr * grad L(Y_{T-1}))`` from
    ``final_step``, as in the original implementation: differentiating a step that starts at Y_T
    instead (a step never taken) made iDSPN collapse on class-specific numbering
    (docs/numbering.md). The value stays Y_T.
    """
    return y_star.detach() + (step - step.detach())  # value Y_T, gradient of the step


def _conjugate_gradient(matvec: Callable[[Tensor], Tensor], rhs: Tensor, iters: int, tol: float) -> Tensor:
    """Solve ``A x = rhs`` per example (A symmetric) with batched conjugate gradient.

    An example stops changing once its residual is within ``tol * |rhs|``, so its solution does not
    depend on the other examples of the batch or on how many iterations the loop runs after it has
    converged. On CPU the loop ends when every example has converged (reading that costs nothing
    there); elsewhere it runs all ``iters`` iterations, with no host synchronisation.
    """
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    sq_norm = _per_example_dot(residual, residual)  # (B,)
    stop = (tol * rhs.flatten(1).norm(dim=1)) ** 2  # (B,)
    may_end_early = rhs.device.type == "cpu" and not torch.compiler.is_compiling()
    for _ in range(iters):
        active = sq_norm > stop  # (B,): not converged yet
        if may_end_early and not bool(active.any()):
            break
        a_dir = matvec(direction)
        curvature = _per_example_dot(direction, a_dir)
        moves = active & (curvature.abs() > 1e-30)
        alpha = torch.where(moves, sq_norm / torch.where(moves, curvature, 1.0), 0.0).view(-1, 1, 1)
        keep = active.view(-1, 1, 1)  # converged examples keep their solution, residual and direction
        x = torch.where(keep, x + alpha * direction, x)
        residual = torch.where(keep, residual - alpha * a_dir, residual)
        new_sq_norm = _per_example_dot(residual, residual)
        beta = torch.where(sq_norm > 0, new_sq_norm / sq_norm, torch.zeros_like(sq_norm))
        direction = torch.where(keep, residual + beta.view(-1, 1, 1) * direction, direction)
        sq_norm = torch.where(active, new_sq_norm, sq_norm)
    return x


def attach_cg_implicit_grad(
    problem: InnerProblem,
    optimizer: InnerOptimizer,
    y_star: Tensor,
    y_prev: Tensor,
    gamma: float | None,
    iters: int,
    tol: float,
) -> Tensor:
    """Return Y* whose gradient is the (regularised) implicit gradient of Appendix D (Eq. 43).

    With ``step(Y) = -lr * grad L(Y)`` and ``A = -d step / dY = lr * H``, the incoming gradient v is
    replaced by the solution u of ``(A / gamma + I) u = v`` (``A u = v`` for ``gamma=None``) and then
    backpropagated through ``step``, giving ``u^T d step / d(z, theta)``. Like ``"approx"``, H and
    the step are taken at the last iterate before the final update, ``y_prev``.
    """
    leaf = y_prev.detach().requires_grad_()
    with torch.enable_grad():
        step = -optimizer.lr * problem.grad(leaf)  # (B, N, D)

    def matvec(u: Tensor) -> Tensor:
        (vjp,) = torch.autograd.grad(step, leaf, u, retain_graph=True)
        a_u = -vjp  # A symmetric: the VJP is the matrix-vector product
        return a_u if gamma is None else a_u / gamma + u

    # The hook sits on a copy: the Hessian products start from `step` itself and must not re-enter it.
    solved = step.clone()
    solved.register_hook(lambda v: _conjugate_gradient(matvec, v, iters, tol))
    return y_star.detach() + (solved - solved.detach())


# --- diagnostics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InnerDiagnostics:
    """How far one forward's inner optimisation got (``IDSPN.record_diagnostics``); all detached.

    Attributes:
        iters: inner steps taken.
        initial_objective: ``(B,)`` L(Y0), the inner objective at the initial set.
        final_objective: ``(B,)`` L(Y*) at the returned set.
        final_grad_norm: ``(B,)`` ||grad L(Y*)||: near 0 when the inner problem is solved (the
            premise of Eq. 9), large when ``lr`` or ``iters`` are too small.
        distance: ``(B,)`` ||Y* - Y0||: how far the elements moved from the initial set.
    """

    iters: int
    initial_objective: Tensor
    final_objective: Tensor
    final_grad_norm: Tensor
    distance: Tensor

    def summary(self) -> dict[str, float]:
        """Means over the batch, e.g. for a logger: ``{"final_objective": ..., ...}`` (one host sync)."""
        fields = ("initial_objective", "final_objective", "final_grad_norm", "distance")
        means = torch.stack([getattr(self, name).double().mean() for name in fields]).tolist()
        return dict(zip(fields, means, strict=True))


@torch.no_grad()
def diagnose(problem: InnerProblem, y: Tensor, iters: int) -> InnerDiagnostics:
    """The diagnostics of the set ``y`` that ``iters`` steps reached on ``problem``."""
    y, y0 = y.detach(), problem.init_set.detach()
    final_objective, grad = problem.value_and_grad(y)
    return InnerDiagnostics(
        iters=iters,
        initial_objective=problem.value(y0),
        final_objective=final_objective,
        final_grad_norm=torch.linalg.vector_norm(grad, dim=(1, 2)),
        distance=torch.linalg.vector_norm(y - y0, dim=(1, 2)),
    )


# --- the decoder ---------------------------------------------------------------------------------


def _check_positive(value: float, name: str, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive {'int' if integer else 'finite number'}, got {value!r}")


def _check_flag(value: bool, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


class IDSPN(nn.Module):
    """Implicit deep set prediction network: z ``(B, L)`` -> Y ``(B, N, D)`` by inner optimisation.

    Args:
        encoder: permutation-invariant set encoder g: ``(B, N, fixed_dim + set_dim) -> (B, L)``;
            an ``FSEncoder`` (fused inner gradient) or any ``SetEncoder``. A plain module is wrapped
            in ``ModuleSetEncoder`` and differentiated with ``torch.func.vjp``.
        set_size: number of elements N.
        set_dim: dimension D of the optimised part of each element.
        iters: inner steps (Eq. 7); change ``decoder.iters`` or pass ``iters=`` to evaluate at more.
        lr: inner learning rate.
        momentum: Nesterov momentum (0 for plain gradient descent).
        grad_clip: clip each example's inner gradient to this L2 norm (None: no clipping).
        init: initial set Y0: ``"random"`` N(0, init_std^2 I) per example (the paper's N(0, I/10)),
            ``"zeros"``, or ``"learned"`` (a parameter initialised from N(0, init_std^2 I); it gets
            its gradient through the regulariser ``reg``, Section 3).
        init_std: standard deviation of the random or learned initial set.
        reg: weight lambda of the regulariser ``lambda/2 ||Y - Y0||^2``.
        projection: ``"simplex"`` projects every element onto the probability simplex after every
            step (Eq. 10), or None.
        project_init: with a projection, project Y0 too before the first step (as the original
            code did), so that the first gradient is taken at a feasible set.
        fixed_dim: number F of leading element dims given by the caller through ``fixed`` and kept
            fixed; the encoder sees ``cat(fixed, Y)``.
        backward: ``"approx"`` (Eq. 9), ``"cg"`` (Appendix D) or ``"unroll"`` (DSPN).
        cg_iters: conjugate-gradient steps for ``backward="cg"``.
        cg_gamma: Hessian regularisation gamma of ``(lr*H/gamma + I) u = v``; None solves
            ``lr*H u = v`` exactly.
        cg_tol: relative residual at which an example's CG solve stops (per example; on CPU the loop
            ends once every example has; elsewhere it runs cg_iters, with no host synchronisation).
        compile: ``torch.compile`` one inner step (``fullgraph=True``, ``compile_arguments``):
            False (eager), True (mode ``"default"``) or a mode from ``COMPILE_MODES``
            (``"reduce-overhead"`` uses CUDA graphs; pair it with ``check_finite=False``). The
            first call of each shape compiles (seconds).
        check_finite: check once per forward that the output is finite and raise otherwise (one
            host synchronisation). False makes a forward free of host synchronisation (CUDA
            graphs, ``torch.func.vmap``); NaN then propagates.

    Attributes:
        record_diagnostics: set True to make each forward store an ``InnerDiagnostics`` of its
            inner loop in ``last_diagnostics`` (costs two more encoder evaluations, one with its
            gradient, per forward; ``forward`` still returns only the set). False by default.
        last_diagnostics: the diagnostics of the latest forward while recording, else None.
    """

    def __init__(
        self,
        encoder: nn.Module,
        set_size: int,
        set_dim: int,
        iters: int = 20,
        lr: float = 1.0,
        momentum: float = 0.0,
        grad_clip: float | None = None,
        init: str = "random",
        init_std: float = 0.1**0.5,
        reg: float = 0.0,
        projection: str | None = None,
        project_init: bool = True,
        fixed_dim: int = 0,
        backward: str = "approx",
        cg_iters: int = 10,
        cg_gamma: float | None = None,
        cg_tol: float = 1e-6,
        compile: bool | str = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        _check_positive(set_size, "set_size", integer=True)
        _check_positive(set_dim, "set_dim", integer=True)
        _check_positive(iters, "iters", integer=True)
        _check_positive(lr, "lr")
        _check_positive(init_std, "init_std")
        _check_positive(cg_iters, "cg_iters", integer=True)
        _check_positive(cg_tol, "cg_tol")
        _check_flag(project_init, "project_init")
        _check_flag(check_finite, "check_finite")
        if grad_clip is not None:
            _check_positive(grad_clip, "grad_clip")
        if cg_gamma is not None:
            _check_positive(cg_gamma, "cg_gamma")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not 0 <= reg < math.inf:
            raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
        if isinstance(fixed_dim, bool) or not isinstance(fixed_dim, int) or fixed_dim < 0:
            raise ValueError(f"fixed_dim must be an int >= 0, got {fixed_dim!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if backward not in BACKWARD_MODES:
            raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}")
        if projection is not None and projection not in PROJECTIONS:
            raise ValueError(f"projection must be None or one of {tuple(PROJECTIONS)}, got {projection!r}")
        if backward == "cg" and projection is not None:
            raise ValueError("backward='cg' needs projection=None: its linear solve assumes a symmetric Hessian")
        if compile is not False and compile is not True and compile not in COMPILE_MODES:
            raise ValueError(f"compile must be True, False or one of {COMPILE_MODES}, got {compile!r}")
        if not isinstance(encoder, nn.Module):
            raise ValueError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
        encoder_dim = getattr(encoder, "set_dim", None)
        if encoder_dim is not None and encoder_dim != fixed_dim + set_dim:
            raise ValueError(f"encoder.set_dim={encoder_dim} must equal fixed_dim + set_dim = {fixed_dim} + {set_dim}")
        pool = getattr(encoder, "pool", None)
        if isinstance(pool, FSPool) and pool.set_size is not None and pool.set_size < set_size:
            raise ValueError(f"set_size={set_size} exceeds the encoder's FSPool set_size={pool.set_size}")
        if not isinstance(encoder, SetEncoder):
            encoder = ModuleSetEncoder(encoder, fixed_dim + set_dim, getattr(encoder, "latent_dim", None))
        self.encoder = encoder
        self.set_size = set_size
        self.set_dim = set_dim
        self.iters = iters
        self.fixed_dim = fixed_dim
        self.init = init
        self.init_std = float(init_std)
        self.reg = float(reg)
        self.project_init = project_init
        self.backward_mode = backward
        self.cg_iters, self.cg_gamma, self.cg_tol = cg_iters, cg_gamma, float(cg_tol)
        self.compile_mode: str | None = "default" if compile is True else (compile or None)
        self.check_finite = check_finite
        self.optimizer = InnerOptimizer(
            lr=float(lr),
            momentum=float(momentum),
            grad_clip=None if grad_clip is None else float(grad_clip),
            projection=None if projection is None else PROJECTIONS[projection],
        )
        if init == "learned":
            self.init_set = nn.Parameter(torch.randn(set_size, set_dim) * init_std)  # (N, D)
        else:
            self.register_parameter("init_set", None)
        self.record_diagnostics = False
        self.last_diagnostics: InnerDiagnostics | None = None

    def extra_repr(self) -> str:
        o = self.optimizer
        return (
            f"set_size={self.set_size}, set_dim={self.set_dim}, iters={self.iters}, lr={o.lr}, "
            f"momentum={o.momentum}, grad_clip={o.grad_clip}, init={self.init!r}, reg={self.reg}, "
            f"fixed_dim={self.fixed_dim}, backward={self.backward_mode!r}, compile={self.compile_mode!r}"
        )

    def _check_inputs(self, z: Tensor, init_set: Tensor | None, fixed: Tensor | None) -> None:
        if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must be a floating tensor of shape (B, L), got {shape}")
        if z.shape[0] == 0:
            raise ValueError("z must hold at least one example, got batch size 0")
        latent_dim = getattr(self.encoder, "latent_dim", None)
        if latent_dim is not None and z.shape[1] != latent_dim:
            raise ValueError(f"z must have the encoder's latent_dim={latent_dim} features, got {tuple(z.shape)}")
        parameter = next(self.encoder.parameters(), None)
        if parameter is not None and z.dtype != parameter.dtype and not torch.is_autocast_enabled(z.device.type):
            raise ValueError(f"z must have the decoder's dtype {parameter.dtype}, got {z.dtype}")
        learned = self.init_set if self.init == "learned" and init_set is None else None
        if learned is not None and learned.dtype != z.dtype and not torch.is_autocast_enabled(z.device.type):
            raise ValueError(
                f"the decoder's learned initial set is {learned.dtype} but z is {z.dtype}: convert the whole "
                f"decoder (decoder.to({z.dtype})), not only its encoder"
            )
        if (fixed is None) != (self.fixed_dim == 0):
            raise ValueError(f"fixed must be given exactly when fixed_dim > 0 (fixed_dim={self.fixed_dim})")
        for name, x, dim_name in (("init_set", init_set, "set_dim"), ("fixed", fixed, "fixed_dim")):
            if x is None:
                continue
            check_set(x, name, set_size=self.set_size)
            if x.shape[2] != getattr(self, dim_name):
                raise ValueError(
                    f"{name} must have the decoder's {dim_name}={getattr(self, dim_name)} features, "
                    f"got shape {tuple(x.shape)}"
                )
            if x.shape[0] != z.shape[0]:
                raise ValueError(f"{name} batch size {x.shape[0]} != z batch size {z.shape[0]}")
            if x.dtype != z.dtype:
                raise ValueError(f"{name} must have z's dtype {z.dtype}, got {x.dtype}")

    def initial_set(self, z: Tensor) -> Tensor:
        """``(B, N, D)`` initial set Y0 for a batch encoded as ``z``."""
        shape = (z.shape[0], self.set_size, self.set_dim)
        if self.init == "learned":
            return self.init_set.unsqueeze(0).expand(shape)
        if self.init == "zeros":
            return z.new_zeros(shape)
        return torch.randn(shape, dtype=z.dtype, device=z.device) * self.init_std

    def problem(self, z: Tensor, init_set: Tensor, fixed: Tensor | None = None) -> InnerProblem:
        """The inner objective of one call, e.g. to evaluate ``problem(...).value(Y)``."""
        return InnerProblem(self.encoder, z, init_set, fixed, self.reg)

    def _compiled_or_eager(self, function: _Step, device: torch.device) -> _Step:
        return function if self.compile_mode is None else _compiled(self, function, self.compile_mode, device)

    def _run(self, problem: InnerProblem, y: Tensor, buf: Tensor | None, steps: int) -> tuple[Tensor, Tensor | None]:
        """``steps`` inner steps from ``(y, buf)``; differentiable iff grad mode is on (DSPN).

        Memory does not grow with ``steps`` without grad: each step's tensors are freed by the next.
        """
        step = self._compiled_or_eager(inner_step, y.device)
        for _ in range(steps):
            y, buf = step(problem, self.optimizer, y, buf)
        return y, buf

    def forward(
        self,
        z: Tensor,
        init_set: Tensor | None = None,
        fixed: Tensor | None = None,
        iters: int | None = None,
    ) -> Tensor:
        """Decode ``z`` into a set.

        Args:
            z: ``(B, L)`` input vector.
            init_set: ``(B, N, D)`` explicit initial set Y0 (default: by ``init``).
            fixed: ``(B, N, fixed_dim)`` fixed leading dims of every element.
            iters: inner steps for this call (default: ``self.iters``).

        Returns:
            ``(B, N, D)`` the predicted set Y*.

        Raises:
            ValueError: for inputs of the wrong shape or dtype, or (with ``check_finite``) inputs
                or parameters holding NaN or inf.
            InnerLoopDivergence: (with ``check_finite``) when the inner loop turned finite inputs
                into NaN or inf.
        """
        self._check_inputs(z, init_set, fixed)
        if iters is None:
            iters = self.iters
        _check_positive(iters, "iters", integer=True)
        y0 = self.initial_set(z) if init_set is None else init_set
        problem = self.problem(z, y0, fixed)
        start = self.optimizer.project(y0) if self.project_init else y0
        buf = torch.zeros_like(y0) if self.optimizer.momentum else None
        training = torch.is_grad_enabled()
        if training and self.backward_mode == "unroll":
            y, _ = self._run(problem, start, buf, iters)
            self._finish(y, problem, iters)
            return y
        with torch.no_grad():
            y, buf = self._run(problem, start.detach(), buf, iters - 1 if training else iters)
        if not training:
            self._finish(y, problem, iters)
            return y
        if self.backward_mode == "approx":
            y_star, step = self._compiled_or_eager(final_step, y.device)(problem, self.optimizer, y, buf)
            self._finish(y_star, problem, iters)
            return attach_approx_implicit_grad(y_star, step)
        with torch.no_grad():
            y_star, _ = self._run(problem, y, buf, 1)
        self._finish(y_star, problem, iters)
        return attach_cg_implicit_grad(problem, self.optimizer, y_star, y, self.cg_gamma, self.cg_iters, self.cg_tol)

    def _finish(self, y: Tensor, problem: InnerProblem, iters: int) -> None:
        """The end of every forward: the diagnostics when recording, then the one finiteness check
        (on failure, name the non-finite input if any)."""
        if self.record_diagnostics:
            self.last_diagnostics = diagnose(problem, y, iters)
        if not self.check_finite or y.is_meta or bool(torch.isfinite(y).all()):
            return
        inputs = {"z": problem.z, "init_set": problem.init_set, "fixed": problem.fixed}
        inputs.update({f"parameter {name}": p for name, p in self.named_parameters()})
        for name, x in inputs.items():
            if x is not None and not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name} contains NaN or inf")
        raise InnerLoopDivergence(
            f"the inner optimisation diverged (NaN or inf in Y after {iters} steps at "
            f"lr={self.optimizer.lr}, momentum={self.optimizer.momentum}); lower lr or set grad_clip"
        )
