"""Episode pictures: the three views side by side, written as GIF (or MP4 with imageio-ffmpeg)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np

VIEW_NAMES = ("camera", "static_scene", "grippers")


def tile_views(views: list[np.ndarray], scale: int = 1, gap: int = 2) -> np.ndarray:
    """Views (each (T, H, W, 3) uint8) side by side, upscaled by `scale`: (T, H*s, n*W*s + gaps, 3)."""
    if not views:
        raise ValueError("tile_views needs at least one view")
    shapes = {v.shape for v in views}
    if len(shapes) != 1 or views[0].ndim != 4 or views[0].shape[-1] != 3:
        raise ValueError(f"views must share one (T, H, W, 3) shape, got {sorted(shapes)}")
    t, h, w, _ = views[0].shape
    if scale != 1:
        views = [np.stack([cv2.resize(f, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST) for f in v]) for v in views]
    spacer = np.full((t, h * scale, gap, 3), 255, np.uint8)
    parts = []
    for i, v in enumerate(views):
        parts += [spacer, v] if i else [v]
    return np.concatenate(parts, axis=2)


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float = 4.0) -> Path:
    """Write (T, H, W, 3) uint8 frames to `path` (.gif, or .mp4 when imageio-ffmpeg is installed).

    Written to a temporary file and renamed, so an interrupted write leaves no half file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"video path must end in .gif or .mp4, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    if suffix == ".gif":
        iio.imwrite(tmp, frames, duration=1000.0 / fps, loop=0)
    else:
        iio.imwrite(tmp, frames, fps=fps)
    os.replace(tmp, path)
    return path
