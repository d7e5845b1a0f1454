"""diffsampler: diffusion samplers for unnormalised densities (Target -> Searcher -> Buffer ->
Learner -> Evaluator -> Report)."""
from . import errors, targets
from .sampler import DiffusionSampler

__version__ = "0.1.0"


def train(*args, **kwargs):
    """Train a sampler; see `diffsampler.training.train`."""
    from .training import train as _train
    return _train(*args, **kwargs)


__all__ = ["targets", "DiffusionSampler", "train", "__version__"]
