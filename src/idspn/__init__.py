"""idspn: multiset-equivariant set prediction with approximate implicit differentiation (iDSPN).

The library: set encoders (``FSEncoder``, ``FSPool``), the decoder ``IDSPN`` (DSPN with ``backward="unroll"``),
Hungarian matching and losses, and tools to test equivariance properties (Definitions 1-2).
"""

from .decoders import IDSPN, InnerDiagnostics, InnerLoopDivergence
from .equivariance import Equivariance, classify_equivariance, push_apart
from .losses import PAIRWISE_LOSSES, PairwiseLoss, hungarian_loss, hungarian_match
from .matching import batched_assignment
from .projections import project_simplex
from .set_encoders import FSEncoder, FSPool, MaxPool, MeanPool, ModuleSetEncoder, SetEncoder, SumPool

__version__ = "0.1.0"

__all__ = [
    "IDSPN",
    "InnerLoopDivergence",
    "InnerDiagnostics",
    "FSEncoder",
    "FSPool",
    "SumPool",
    "MeanPool",
    "MaxPool",
    "SetEncoder",
    "ModuleSetEncoder",
    "hungarian_loss",
    "hungarian_match",
    "PairwiseLoss",
    "PAIRWISE_LOSSES",
    "batched_assignment",
    "project_simplex",
    "push_apart",
    "classify_equivariance",
    "Equivariance",
]
