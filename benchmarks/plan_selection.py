"""Does best-of-N selection in the world model beat executing one random proposal?

Pools `wmgym plan` runs of the same settings over disjoint start states
(`wmgym.policies.mpc.pool_plan_runs`), prints a Markdown table of success per arm and the
`selection_test` of planner - random proposal (on success and on the simulator's fold score,
per task and pooled), and with `--plot` draws it:

    python benchmarks/plan_selection.py runs/plan_k16.json runs/plan_k16_s20.json runs/plan_k16_s40.json \
        --out docs/plan_selection_held/selection.json --plot docs/plan_selection_held/selection.png

Runs made with `--random-proposals K` execute K random proposals per start state, whose mean
is that start state's random-proposal success rate: a sharper baseline than one draw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wmgym.policies.mpc import pool_plan_runs


def table(summary: dict) -> str:
    lines = ["| task | start states | best-of-N | one random proposal (draws per start) | demonstrator | planner - random: success, 95% CI, p | fold score: planner - random, p |",
             "|---|---|---|---|---|---|---|"]
    for task, row in summary.items():
        win, score = row["selection"]["success"], row["selection"]["score"]
        lines.append(f"| {task} | {win['starts']} | {100 * row['planner']:.1f}% | {100 * row['random-proposal']:.1f}% ({row['random_draws']}) | "
                     f"{100 * row['scripted']:.1f}% | {100 * win['difference']:+.1f} pts [{100 * win['ci95'][0]:+.1f}, {100 * win['ci95'][1]:+.1f}], "
                     f"p = {win['p_value']:.3g} | {score['difference']:+.3f}, p = {score['p_value']:.3g} |")
    return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    starts = np.array([summary[n]["selection"]["success"]["starts"] for n in names])
    fig, ax = plt.subplots(figsize=(1.9 * len(names) + 3.0, 3.2))
    x = np.arange(len(names))
    for offset, (arm, label, color) in zip((-0.27, 0.0, 0.27), (("planner", "best-of-N in imagination", "tab:blue"),
                                                                  ("random-proposal", "random proposal (mean of draws)", "tab:gray"),
                                                                  ("scripted", "demonstrator", "tab:green"))):
        rates = np.array([summary[n][arm] for n in names])
        err = 1.96 * np.sqrt(rates * (1 - rates) / np.maximum(starts, 1)) if arm != "random-proposal" else None
        ax.bar(x + offset, 100 * rates, 0.26, yerr=None if err is None else 100 * err, capsize=3, label=label, color=color)
    for i, n in enumerate(names):
        test = summary[n]["selection"]["success"]
        ax.text(i, 103, f"{100 * test['difference']:+.1f} pts\np = {test['p_value']:.2g}", ha="center", fontsize=8)
    ax.set_xticks(x, [f"{n}\n({s} starts)" for n, s in zip(names, starts)], fontsize=8)
    ax.set_ylim(0, 118)
    ax.set_ylabel("success in SimFold-v0 (%)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="error bars: 95% binomial", title_fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by `wmgym plan --out`")
    parser.add_argument("--out", help="write the pooled summary here (JSON)")
    parser.add_argument("--plot", help="write a bar chart here (PNG)")
    args = parser.parse_args()
    pooled = pool_plan_runs([json.loads(Path(path).read_text()) for path in args.runs])
    print(table(pooled["summary"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"config": pooled["config"], "summary": pooled["summary"], "sources": args.runs}, indent=2))
    if args.plot:
        plot(pooled["summary"], args.plot)


if __name__ == "__main__":
    main()
