"""EUBO − ELBO versus energy calls for recipes run separately (other overrides, other seeds), on one figure.

`benchmarks/sgds.py` writes one JSON per suite and override set; this script reads several of them,
keeps the rows of the recipes asked for, and writes one plot (every seed drawn, one colour per
recipe), a markdown table of the runs and a per-recipe summary (mean and sample sd of the final gap
over the rows given). Writes benchmarks/out/<name>.{json,md,png}.

    python benchmarks/gap_vs_calls.py --name mw128_side_by_side \\
        benchmarks/out/sgds_mw128_ema_decay0.999_seed1_time_warp2.0_width512.json \\
        benchmarks/out/sgds_mw128_ema_decay0.999_search_chains4000_search_steps50_seed1_time_warp2.0_width512.json \\
        sgds_jeffreys=benchmarks/out/<a run of the recipe's long form>.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from sgds import OUT, markdown, plot

from diffsampler.training.checkpoint import write_json


def summary(rows: list[dict]) -> str:
    """Per (target, recipe): number of runs, mean (sd) of ELBO, EUBO and the final gap, calls used."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], r.get("label") or r["recipe"]), []).append(r)
    lines = ["| target | recipe | runs | energy calls (search + train) | ELBO | EUBO | EUBO − ELBO |",
             "|" + " --- |" * 7]

    def ms(values: list[float]) -> str:
        return f"{statistics.mean(values):.2f}" + (f" ({statistics.stdev(values):.2f})" if len(values) > 1 else "")
    for (target, recipe), g in groups.items():
        calls = statistics.mean(r["energy_calls"]["search"] + r["energy_calls"]["train"] for r in g)
        lines.append(f"| {target} | {recipe} | {len(g)} | {calls:,.0f} | {ms([r['elbo'] for r in g])} | "
                     f"{ms([r['eubo'] for r in g])} | {ms([r['eubo_minus_elbo'] for r in g])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="[LABEL=]FILE",
                   help="JSON files written by benchmarks/sgds.py; LABEL= names the recipe of all of a file's rows "
                        "(e.g. a run made with the long form of a named recipe); {recipe} in it stands for the row's")
    p.add_argument("--only", nargs="*", help="keep these recipes (default: all rows)")
    p.add_argument("--name", required=True, help="output name under benchmarks/out (no extension)")
    a = p.parse_args(argv)
    rows = []
    for arg in a.files:
        label, _, f = arg.rpartition("=") if "=" in arg and not os.path.exists(arg) else ("", "", arg)
        try:
            data = json.load(open(f))
        except (OSError, json.JSONDecodeError) as err:
            p.error(f"{f}: cannot read a benchmark JSON ({err})")
        if not isinstance(data, list) or not all(isinstance(r, dict) and "curve" in r for r in data):
            p.error(f"{f}: not a list of benchmarks/sgds.py result rows")
        if label:
            data = [{**r, "label": label.replace("{recipe}", r["recipe"])} for r in data]
        rows += [r for r in data if not a.only or (r.get("label") or r["recipe"]) in a.only]
    if not rows:
        p.error(f"no rows of recipes {a.only} in the files given")
    base = os.path.join(OUT, a.name)
    write_json(base + ".json", rows)
    text = summary(rows) + "\n" + markdown(rows)
    open(base + ".md", "w").write(text)
    plot(rows, base + ".png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
