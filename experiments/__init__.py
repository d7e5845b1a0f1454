"""Experiments: the scripts behind docs/RESULTS.md, on one small harness (experiments/harness.py).

Each script runs from the repository root as `python experiments/NAME.py ...` (`--help` says what it
measures) and writes under experiments/out/NAME/ (git-ignored): a JSON, a markdown table, and a plot
where there is one. Presets (JSON objects of config keys) are in experiments/configs/. The held-out
suite is a package of its own: `python -m experiments.heldout.run_suite` (experiments/heldout/README.md).
"""
