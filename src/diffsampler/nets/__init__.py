"""Networks: time embedding, drifts (MLP / Langevin-parametrised), log-flow."""
from .drift import LangevinDrift, MLPDrift
from .flow import LogFlow
from .time_embedding import HarmonicEmbedding, mlp

__all__ = ["HarmonicEmbedding", "mlp", "MLPDrift", "LangevinDrift", "LogFlow"]
