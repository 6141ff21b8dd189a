"""How far `wmgym eval-policies`' Spearman moves from sampling alone: a parametric bootstrap.

    python benchmarks/agreement_spread.py runs/ep_held12/agreement.json docs/eval_policies_stage3/agreement.json

Each policy's success rate in each world is redrawn as Binomial(n, rate) / n (n = the run's
episodes), independently per policy and world, and Spearman and Pearson are recomputed over
the redrawn rates, `--draws` times. The interval is what a fresh set of n start states could
give if the measured rates were the true ones. It ignores that the policies share their start
states (a hard start is hard for every policy), so it is a rough guide, not a test; it is
meant for comparing two runs' figures with the same policies, whose intervals it prints side
by side. Several `agreement.json` files are pooled first (`pool_agreements`) when joined with
a comma: `a.json,b.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wmgym.eval.policies import pool_agreements, rank_agreement


def load(spec: str) -> dict:
    """One `agreement.json`, or several joined by commas pooled into one."""
    results = [json.loads(Path(path).read_text()) for path in spec.split(",")]
    return results[0] if len(results) == 1 else pool_agreements(results)


def spread(result: dict, draws: int, seed: int) -> dict:
    """Bootstrap quantiles of Spearman and Pearson for one run's per-policy rates."""
    rows = result["policies"]
    n = int(result["episodes"])
    sim = np.array([row["sim_success_rate"] for row in rows])
    model = np.array([row["model_success_rate"] for row in rows])
    rng = np.random.default_rng(seed)
    redrawn = [rank_agreement(rng.binomial(n, sim) / n, rng.binomial(n, model) / n) for _ in range(draws)]
    redrawn = [f for f in redrawn if not np.isnan(f["spearman"])]  # a constant column has no correlation
    rho = np.array([f["spearman"] for f in redrawn])
    r = np.array([f["pearson"] for f in redrawn])
    return {
        "episodes": n,
        "policies": len(rows),
        **rank_agreement(sim, model),
        "spearman_q05_q50_q95": [float(q) for q in np.quantile(rho, [0.05, 0.5, 0.95])],
        "pearson_q05_q50_q95": [float(q) for q in np.quantile(r, [0.05, 0.5, 0.95])],
        "p_spearman_ge_0.9": float((rho >= 0.9).mean()),
        "draws": len(rho),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("agreements", nargs="+", help="agreement.json files (comma-joined ones are pooled)")
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the figures here (JSON)")
    args = parser.parse_args()
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    out = {}
    print("| run | policies x episodes | Spearman | 90% interval | share of draws >= 0.9 | Pearson | 90% interval |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.agreements:
        f = spread(load(spec), args.draws, args.seed)
        out[spec] = f
        sq, pq = f["spearman_q05_q50_q95"], f["pearson_q05_q50_q95"]
        print(f"| {spec} | {f['policies']} x {f['episodes']} | {f['spearman']:.3f} | [{sq[0]:.3f}, {sq[2]:.3f}] "
              f"| {100 * f['p_spearman_ge_0.9']:.0f}% | {f['pearson']:.3f} | [{pq[0]:.3f}, {pq[2]:.3f}] |")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
