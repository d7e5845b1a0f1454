"""Evaluation: ELBO, EUBO, log Z (IS), ESS, W2, MMD, mode coverage, plots."""
from .defensive import DefensiveMixture
from .distances import mmd_rbf, wasserstein2
from .evaluator import Evaluation, evaluate
from .metrics import elbo, ess_fraction, log_z_is
from .particles import (equivariant_w2, interatomic_distances, kabsch, particle_metrics,
                        plot_particle_histograms, wasserstein_1d)

__all__ = ["evaluate", "DefensiveMixture", "Evaluation", "elbo", "log_z_is", "ess_fraction", "wasserstein2", "mmd_rbf",
           "interatomic_distances", "wasserstein_1d", "kabsch", "equivariant_w2", "particle_metrics",
           "plot_particle_histograms"]
