"""The held-out suite: posteriordb posteriors and synthetic targets, written once for torch and jax,
trained with the library's defaults and set beside NUTS (numpyro). See README.md here."""
