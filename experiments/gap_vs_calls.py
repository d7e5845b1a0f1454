"""EUBO − ELBO against energy calls for recipes run separately (other overrides, other seeds), on
one figure, with a per-recipe summary over seeds.

`experiments/sgds.py` writes one JSON per suite and override set; this script reads several of
them, keeps the rows of the recipes asked for, and writes one plot (every seed drawn, one colour per
recipe), a markdown table of the runs and a per-recipe summary (mean and sample sd of ELBO, EUBO
and the final gap over the rows given). Writes experiments/out/gap_vs_calls/<name>.{json,md,png}.

    python experiments/gap_vs_calls.py --name mw128_side_by_side \\
        experiments/out/sgds/sgds_mw128_seed1.json experiments/out/sgds/sgds_mw128_seed2.json \\
        "{recipe} (long form)=experiments/out/sgds/<a run of a recipe's long form>.json"
"""
from __future__ import annotations

import json
import os
import statistics
import sys

if __package__ in (None, ""):   # run as a file: python experiments/gap_vs_calls.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import harness
from experiments.sgds import markdown, plot

NAME = "gap_vs_calls"


def summary(rows: list[dict]) -> str:
    """Per (target, recipe): number of runs, mean (sd) of ELBO, EUBO and the final gap, calls used."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], r.get("label") or r["recipe"]), []).append(r)

    def ms(values: list[float]) -> str:
        return f"{statistics.mean(values):.2f}" + (f" ({statistics.stdev(values):.2f})" if len(values) > 1 else "")
    cells = []
    for (target, recipe), g in groups.items():
        calls = statistics.mean(r["energy_calls"]["search"] + r["energy_calls"]["train"] for r in g)
        cells.append([target, recipe, len(g), f"{calls:,.0f}", ms([r["elbo"] for r in g]), ms([r["eubo"] for r in g]),
                      ms([r["eubo_minus_elbo"] for r in g])])
    return harness.md_table(["target", "recipe", "runs", "energy calls (search + train)", "ELBO", "EUBO",
                             "EUBO − ELBO"], cells)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("files", nargs="+", metavar="[LABEL=]FILE",
                   help="JSON files written by experiments/sgds.py; LABEL= names the recipe of all of a file's "
                        "rows (e.g. a run made with the long form of a named recipe); {recipe} in it stands for "
                        "the row's")
    p.add_argument("--only", nargs="*", help="keep these recipes (default: all rows)")
    p.add_argument("--name", required=True, help="output name under experiments/out/gap_vs_calls (no extension)")
    a = p.parse_args(argv)
    rows = []
    for arg in a.files:
        label, _, f = arg.rpartition("=") if "=" in arg and not os.path.exists(arg) else ("", "", arg)
        try:
            with open(f) as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError) as err:
            p.error(f"{f}: cannot read an experiments/sgds.py JSON ({err})")
        if not isinstance(data, list) or not all(isinstance(r, dict) and "curve" in r for r in data):
            p.error(f"{f}: not a list of experiments/sgds.py result rows")
        if label:
            data = [{**r, "label": label.replace("{recipe}", r["recipe"])} for r in data]
        rows += [r for r in data if not a.only or (r.get("label") or r["recipe"]) in a.only]
    if not rows:
        p.error(f"no rows of recipes {a.only} in the files given")
    base = os.path.join(harness.out_dir(NAME), a.name)
    harness.write_json(base + ".json", rows)
    text = summary(rows) + "\n" + markdown(rows)
    harness.write_text(base + ".md", text)
    plot(rows, base + ".png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
