"""diffsampler: diffusion samplers for unnormalised densities (Target -> Searcher -> Buffer ->
Learner -> Evaluator -> Report).

    import diffsampler as ds
    run = ds.train("manywell32")                          # or ds.train(ds.targets.from_energy(fn, dim=10))
    x, log_w = run.sampler.sample(10_000, steps=100)      # samples (n, d) and log-weights (n,)
"""
from . import errors, targets
from .sampler import DiffusionSampler
from .training import Run, Stage, TrainConfig, load_run, train, train_stages

__version__ = "0.1.0"

__all__ = ["targets", "errors", "DiffusionSampler", "train", "train_stages", "Stage", "load_run", "Run", "TrainConfig",
           "__version__"]
