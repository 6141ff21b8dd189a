"""Reproduce docs/scripted_folds.png:  python docs/scripted_folds.py

One zero-noise, speed-1 scripted fold per task (seed 0, 128x128, `FoldWorld` stepped
directly), frames at steps 0, 4, 8, 12, 16; for each task three rows, one per pixel-aligned
view (camera / static_scene / grippers). The PNG is committed, so it must stay under
400 KB: the tiles are left at their native 128x128 and written as lossless RGB with maximum
PNG compression (about 190 KB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from wmgym.sim.demonstrator import DemoParams, ScriptedDemonstrator
from wmgym.sim.tasks import TASKS
from wmgym.sim.world import FoldWorld, WorldConfig

STEPS = (0, 4, 8, 12, 16)
VIEWS = ("camera", "static_scene", "grippers")
SIZE = 128
LABEL_WIDTH = 104  # left column with the view names
HEADER_HEIGHT = 20  # band above each task: task name and step numbers
GAP = 2
FONT = cv2.FONT_HERSHEY_SIMPLEX


def scripted_fold(task: str, seed: int = 0, size: int = SIZE) -> tuple[dict[int, tuple[np.ndarray, ...]], float]:
    """({step: the three views, each (size, size, 3) uint8 RGB} for STEPS, final score)."""
    world = FoldWorld(WorldConfig(height=size, width=size))
    rng = np.random.default_rng(seed)
    world.reset(rng, task)
    expert = ScriptedDemonstrator(world, rng, DemoParams(), max(STEPS))
    frames = {}
    for t in range(max(STEPS) + 1):
        if t in STEPS:
            frames[t] = world.views()
        if t < max(STEPS):
            world.step(expert.action())
    return frames, world.score()


def _text(image: np.ndarray, text: str, x: int, y: int, scale: float = 0.4) -> None:
    cv2.putText(image, text, (x, y), FONT, scale, (235, 235, 235), 1, cv2.LINE_AA)


def make_figure(seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """(H, W, 3) uint8 RGB figure and the final score of each task's fold."""
    width = LABEL_WIDTH + len(STEPS) * (SIZE + GAP)
    group = HEADER_HEIGHT + len(VIEWS) * (SIZE + GAP)
    figure = np.full((len(TASKS) * group, width, 3), 30, np.uint8)
    scores = {}
    for i, task in enumerate(TASKS):
        frames, scores[task] = scripted_fold(task, seed)
        top = i * group
        _text(figure, task, 4, top + 14, 0.42)
        for j, step in enumerate(STEPS):
            _text(figure, f"step {step}", LABEL_WIDTH + j * (SIZE + GAP) + 40, top + 14)
        for v, view in enumerate(VIEWS):
            y = top + HEADER_HEIGHT + v * (SIZE + GAP)
            _text(figure, view, 4, y + SIZE // 2 + 4)
            for j, step in enumerate(STEPS):
                x = LABEL_WIDTH + j * (SIZE + GAP)
                figure[y : y + SIZE, x : x + SIZE] = frames[step][v]
        _text(figure, f"final score {scores[task]:.2f}", 4, top + HEADER_HEIGHT + SIZE // 2 + 22, 0.35)
    return figure, scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render docs/scripted_folds.png")
    parser.add_argument("--out", default=str(Path(__file__).with_name("scripted_folds.png")),
                        help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="start-state seed of every fold")
    args = parser.parse_args(argv)
    figure, scores = make_figure(args.seed)
    if not cv2.imwrite(args.out, cv2.cvtColor(figure, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {args.out}")
    size_kb = Path(args.out).stat().st_size / 1024
    print(f"wrote {args.out} ({figure.shape[1]}x{figure.shape[0]}, {size_kb:.0f} KB); final scores "
          + ", ".join(f"{t} {s:.2f}" for t, s in scores.items()))


if __name__ == "__main__":
    main()
