"""Pool `wmgym eval-policies` runs of the same policies over disjoint start states into one
agreement figure (`wmgym.eval.policies.pool_agreements`): rates weighted by episodes, then
Spearman and Pearson on the pooled rates.

    python benchmarks/pool_agreement.py runs/ep_default12/agreement.json runs/ep_default12_s12/agreement.json

51 episodes per policy resolve a rate of 10-15% only to about +-5 points, and six of the
twelve policies sit there: pooling two runs (master seeds 11 and 12) is the larger sample.
Prints a Markdown table; `--out` writes the pooled figures as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wmgym.eval.policies import pool_agreements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("agreements", nargs="+", help="agreement.json files of eval-policies runs")
    parser.add_argument("--out", help="write the pooled figures here (JSON)")
    args = parser.parse_args()
    pooled = pool_agreements([json.loads(Path(path).read_text()) for path in args.agreements])
    print(f"{pooled['episodes']} start states (master seeds {pooled['seeds']})\n")
    print("| policy | success in SimFold-v0 | success in WMFold-v0 |\n|---|---|---|")
    for row in pooled["policies"]:
        print(f"| {row['policy']} | {100 * row['sim_success_rate']:.1f}% | {100 * row['model_success_rate']:.1f}% |")
    print(f"\n**Spearman {pooled['spearman']:.3f}**, Pearson {pooled['pearson']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({**pooled, "sources": args.agreements}, indent=2))


if __name__ == "__main__":
    main()
