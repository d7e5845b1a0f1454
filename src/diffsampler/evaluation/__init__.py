"""Evaluation: ELBO, EUBO, log Z (IS), ESS, W2, MMD, mode coverage, plots."""
from .distances import mmd_rbf, wasserstein2
from .evaluator import Evaluation, evaluate
from .metrics import elbo, ess_fraction, log_z_is

__all__ = ["evaluate", "Evaluation", "elbo", "log_z_is", "ess_fraction", "wasserstein2", "mmd_rbf"]
