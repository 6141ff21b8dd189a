"""The env's success judge against the simulator, per behaviour: VideoCLIP alone and the track judge.

    python benchmarks/judge_accuracy.py --data data/judge_e41_h.zarr data/judge_e41x_h.zarr \
        --png docs/judge_confusion.png

For every episode of the imagined stores (`wmgym imagine --held prior`; evaluate on stores whose
start states the judge never trained on: `wmgym train-judge --exclude-seeds-of`) it recomputes
what WMFold-v0 holds after each step (`wmgym.train.judge.episode_signals`) and applies the env's
rule, an episode succeeds at its first accepted prefix of 2..T+1 frames, with
  - the VideoCLIP judge alone (`SuccessJudge`, at its calibrated `success_threshold`), and
  - the track judge of `--judge` (default: the bundle's judge.json),
then prints accuracy, precision, recall and the confusion matrix (TP FP FN TN) per behaviour
(demo clean, demo noisy, perturbed, replay, random, ...) and overall, against the simulator's
success, and draws the confusion matrices into `--png`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from wmgym.envs.bundle import Bundle
from wmgym.rewards.track_judge import TrackJudge
from wmgym.train.judge import confusion_by_behaviour, episode_signals, join_signals, judge_peaks, take, videoclip_peaks


def table(name: str, figures: dict) -> str:
    lines = [f"\n{name}\n", "| behaviour | episodes (succeeded) | accuracy | precision | recall | TP / FP / FN / TN |",
             "|---|---|---|---|---|---|"]
    for behaviour, f in figures.items():
        row = f"| {'**all**' if behaviour == 'all' else behaviour} | {f['count']} ({f['positives']}) | {f['accuracy']:.1%} | "
        row += f"{f['precision']:.1%} | {f['recall']:.1%} | {f['tp']} / {f['fp']} / {f['fn']} / {f['tn']} |"
        lines.append(row.replace("nan%", "n/a"))
    return "\n".join(lines)


def draw(path: Path, results: dict[str, dict]) -> None:
    """One row of 2x2 confusion matrices per judge, one column per behaviour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(results.values())))
    fig, axes = plt.subplots(len(results), len(names), figsize=(1.55 * len(names), 1.75 * len(results)), squeeze=False)
    for r, (judge, figures) in enumerate(results.items()):
        for c, behaviour in enumerate(names):
            f, ax = figures[behaviour], axes[r, c]
            matrix = np.array([[f["tp"], f["fn"]], [f["fp"], f["tn"]]])
            ax.imshow(matrix / max(1, matrix.sum()), cmap="Blues", vmin=0, vmax=1)
            for (i, j), v in np.ndenumerate(matrix):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="black" if matrix[i, j] < 0.6 * matrix.sum() else "white")
            ax.set_xticks([0, 1], ["judged\nyes", "judged\nno"], fontsize=6)
            ax.set_yticks([0, 1], ["sim yes", "sim no"], fontsize=6)
            ax.set_title(f"{behaviour}\nacc {f['accuracy']:.0%}", fontsize=7)
            if c == 0:
                ax.set_ylabel(judge, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="imagined stores (wmgym imagine --held prior)")
    parser.add_argument("--checkpoint", default="default", help="the bundle they were imagined with")
    parser.add_argument("--judge", default=None, help="a judge.json (default: the bundle's)")
    parser.add_argument("--split", choices=("all", "val"), default="all",
                        help="'val': only the episodes of split_episodes(E, 'val') of each store (VideoCLIP's held-out split)")
    parser.add_argument("--cache-dir", default="data/judge_signals", help="cache of the stores' signals")
    parser.add_argument("--png", default=None, help="draw the confusion matrices here")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from wmgym.data.dataset import split_episodes

    parts = []
    for path in args.data:
        signals = episode_signals(path, args.checkpoint, cache_dir=args.cache_dir)
        if args.split == "val":
            signals = take(signals, split_episodes(len(signals["success"]), "val"))
        parts.append(signals)
    signals = join_signals(parts)
    bundle = Bundle.load(args.checkpoint)
    judge_path = Path(args.judge) if args.judge else bundle.judge_file
    videoclip_threshold = float(json.loads((bundle.videoclip_dir / "config.json").read_text())["success_threshold"])
    results = {f"VideoCLIP alone (threshold {videoclip_threshold:.2f})":
               confusion_by_behaviour(videoclip_peaks(signals) >= videoclip_threshold, signals)}
    if judge_path is not None:
        judge = TrackJudge.load(judge_path)
        results[f"track judge (threshold {judge.threshold:.2f})"] = confusion_by_behaviour(
            judge_peaks(judge, signals) >= judge.threshold, signals)
    print(f"{len(signals['success'])} episodes of {', '.join(args.data)} ({args.split}), "
          f"{int(signals['success'].sum())} succeeded in the simulator; judge file: {judge_path}")
    for name, figures in results.items():
        print(table(name, figures))
    if args.png:
        draw(Path(args.png), results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
