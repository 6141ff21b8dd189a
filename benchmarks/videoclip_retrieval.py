"""VideoCLIP on held-out episodes: caption retrieval and the success judge.

    python benchmarks/videoclip_retrieval.py --model /work/runs/videoclip --data /work/data/wm5k.zarr

On the val split (`split_episodes(E, "val")`, the episodes `wmgym train-videoclip` never
trains on) it measures
  (a) task-caption retrieval top-1: episodes that succeeded whose instruction (goal_caption)
      ranks first among the task captions (target >= 90%);
  (b) outcome-caption retrieval top-1: every episode's outcome caption against all distinct
      outcome captions of the store;
  (c) the success judge at the model's calibrated threshold: precision / recall / accuracy on
      whole episodes (truth: the store's success) and on every prefix of 1..T+1 frames
      (truth: the task was done by the newest frame), and the environment's use of it --
      its verdict on whole episodes (success at the first accepted prefix of 2..T+1 frames,
      the rule `wmgym train-videoclip` calibrates by default) and whether, judging after every
      step, it stops at the step the simulator first succeeds?
and the encoder's speed (16 clips of 17 frames, CPU, one thread) and weight size, and prints
a Markdown table. Note: the threshold was chosen on these same val episodes (one scalar).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from wmgym.data.dataset import split_episodes
from wmgym.data.store import EpisodeStore
from wmgym.data.store_layout import CAMERA_KEY
from wmgym.rewards.judge import first_accept_peaks, judge_figures
from wmgym.rewards.videoclip import WEIGHTS_FILE, VideoCLIP
from wmgym.train.judge_eval import judge_probabilities, judged_clips, videoclip_figures
from wmgym.train.episode_clips import load_clips


def stop_step_agreement(probability: np.ndarray, labels: np.ndarray, episodes: np.ndarray, threshold: float) -> dict:
    """Judging each prefix in order as an environment would: share of episodes where the judge's
    first "done" is the simulator's first success (or both never fire), early and late stops."""
    same = early = late = 0
    ids = np.unique(episodes)
    for e in ids:
        said, truth = probability[episodes == e] >= threshold, labels[episodes == e]
        first_said = int(np.argmax(said)) if said.any() else len(said)
        first_true = int(np.argmax(truth)) if truth.any() else len(truth)
        same += first_said == first_true
        early += first_said < first_true
        late += first_said > first_true
    return {"same_step": same / len(ids), "early": early / len(ids), "late": late / len(ids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="VideoCLIP directory")
    parser.add_argument("--data", required=True, help="episode store")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="as in training")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = VideoCLIP.from_pretrained(args.model, device="cpu")
    store = EpisodeStore.open(args.data)
    val = load_clips(store, split_episodes(store.num_episodes, "val", args.val_fraction))
    outcome_captions = sorted(set(store.attrs["episode_captions"]))
    threshold = model.config.success_threshold

    start = time.perf_counter()
    figures = videoclip_figures(model, val, prefixes=True, outcome_captions=outcome_captions)
    probability, labels, episodes = judge_probabilities(model, val, prefixes=True)
    stops = stop_step_agreement(probability, labels, episodes, threshold)
    at_half = judge_figures(probability >= 0.5, labels)
    peaks = first_accept_peaks(probability, episodes, judged_clips(val, prefixes=True)[1], len(val.tasks))
    verdict = judge_figures(peaks >= threshold, val.success)
    seconds = time.perf_counter() - start

    rows = store.read_frames(np.arange(16), [CAMERA_KEY])[0][CAMERA_KEY][: 16 * 17]  # the first 16 episodes' first 272 frames
    clips = torch.from_numpy(rows).view(16, 17, store.height, store.width, 3)
    with torch.no_grad():
        model.encode_video(clips)
        timings = []
        for _ in range(10):
            tick = time.perf_counter()
            model.encode_video(clips)
            timings.append(time.perf_counter() - tick)
    per_clip_ms = 1000 * np.median(timings) / 16
    weight_mb = (Path(args.model) / WEIGHTS_FILE).stat().st_size / 1e6
    num_params = sum(p.numel() for p in model.parameters())
    succeeded = int(val.success.sum())

    print(f"VideoCLIP {args.model} on {args.data}: {len(val.tasks)} val episodes ({succeeded} succeeded), "
          f"{len(outcome_captions)} distinct outcome captions; {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s); evaluation {seconds:.0f} s\n")
    print("| measure | value |\n|---|---|")
    print(f"| (a) task-caption top-1, succeeded episodes (n={succeeded}, chance 33%, target >= 90%) | {figures['task_top1']:.1%} |")
    print(f"| (b) outcome-caption top-1, all episodes (n={len(val.tasks)}, {len(outcome_captions)} captions) | {figures['outcome_top1']:.1%} |")
    for name, label in (("full", "whole episodes"), ("prefix", "prefixes of 1..T+1 frames")):
        n, positives = figures[f"judge_{name}_count"], figures[f"judge_{name}_positives"]
        print(f"| (c) judge on {label} (n={n}, {positives} done): precision / recall / accuracy | "
              f"{figures[f'judge_{name}_precision']:.1%} / {figures[f'judge_{name}_recall']:.1%} / {figures[f'judge_{name}_accuracy']:.1%} |")
    print(f"| (c) judge on prefixes at threshold 0.5 instead: precision / recall / accuracy | "
          f"{at_half['precision']:.1%} / {at_half['recall']:.1%} / {at_half['accuracy']:.1%} |")
    print(f"| (c) the environment's verdict (first accepted prefix of 2..T+1 frames) on whole episodes: precision / recall / accuracy | "
          f"{verdict['precision']:.1%} / {verdict['recall']:.1%} / {verdict['accuracy']:.1%} |")
    print(f"| (c) judged after every step: stops at the true first-success step / early / late | "
          f"{stops['same_step']:.1%} / {stops['early']:.1%} / {stops['late']:.1%} |")
    print(f"| judge threshold (the model's success_threshold, calibrated on these val episodes) | {threshold:.2f} |")
    print(f"| encode_video, 16 clips x 17 frames, per clip | {per_clip_ms:.2f} ms |")
    print(f"| weights ({WEIGHTS_FILE}) | {weight_mb:.2f} MB ({num_params:,} parameters) |")


if __name__ == "__main__":
    main()
