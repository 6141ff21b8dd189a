"""The simulator's fixed fisheye camera (equidistant model).

A ray at angle theta from the optical axis lands at radius r = f * theta from the image
centre, with f = (min(H, W) / 2) / radians(fov_deg / 2), so `fov_deg` spans the image's
shorter side. Frames: the world is in metres with the table at z = 0 and z up; the camera
frame has x right, y down, z forward (OpenCV convention).

Pixel convention: a continuous image coordinate (u, v) has u along columns and v along
rows; pixel (row i, column j) covers [j, j + 1) x [i, i + 1), so its centre is at
(j + 0.5, i + 0.5) and the image centre is at (W / 2, H / 2).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

MIN_RESOLUTION = 16


def _as_vector(value) -> tuple[float, float, float]:
    vector = tuple(float(x) for x in np.asarray(value, dtype=np.float64).reshape(3))
    if not all(math.isfinite(x) for x in vector):
        raise ValueError(f"camera vectors must be finite, got {value!r}")
    return vector


def _cross(a, b) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _normalized(a) -> tuple[float, float, float]:
    norm = math.hypot(*a)
    return (a[0] / norm, a[1] / norm, a[2] / norm)


@lru_cache(maxsize=16)
def camera_frame_rays(height: int, width: int, fov_deg: float) -> np.ndarray:
    """(H, W, 3) unit camera-frame rays through the pixel centres; depends on the intrinsics only,
    so a moving camera reuses it and only rotates it (read-only, shared)."""
    focal_length = (min(height, width) / 2.0) / math.radians(fov_deg / 2.0)
    du = np.arange(width) + 0.5 - width / 2.0
    dv = np.arange(height) + 0.5 - height / 2.0
    du, dv = np.meshgrid(du, dv)  # (H, W) each
    theta = np.hypot(du, dv) / focal_length
    azimuth = np.arctan2(dv, du)
    sin_theta = np.sin(theta)
    rays = np.stack([sin_theta * np.cos(azimuth), sin_theta * np.sin(azimuth), np.cos(theta)], axis=-1)
    rays.flags.writeable = False
    return rays


@dataclass(frozen=True)
class FisheyeCamera:
    """An equidistant fisheye camera looking from `position` at `look_at`.

    Attributes:
        height, width: image size in pixels (at least `MIN_RESOLUTION` each).
        position: camera centre in the world frame (metres).
        look_at: world point on the optical axis.
        up: world-frame hint for the image's "up" direction (must not be parallel to the view).
        fov_deg: full field of view across the image's shorter side, in (0, 300) degrees.
    """

    height: int
    width: int
    position: tuple[float, float, float] = (0.0, -0.45, 0.75)
    look_at: tuple[float, float, float] = (0.0, 0.02, 0.0)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    fov_deg: float = 120.0

    def __post_init__(self):
        for name in ("height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"camera {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.height < MIN_RESOLUTION or self.width < MIN_RESOLUTION:
            raise ValueError(
                f"resolution {self.height}x{self.width} is too small for the fisheye camera "
                f"model: need at least {MIN_RESOLUTION}x{MIN_RESOLUTION} pixels"
            )
        if not 0.0 < float(self.fov_deg) < 300.0:
            raise ValueError(f"fov_deg must be in (0, 300), got {self.fov_deg!r}")
        object.__setattr__(self, "fov_deg", float(self.fov_deg))
        for name in ("position", "look_at", "up"):
            object.__setattr__(self, name, _as_vector(getattr(self, name)))
        forward = tuple(a - b for a, b in zip(self.look_at, self.position))
        if math.hypot(*forward) < 1e-9:
            raise ValueError("camera look_at must differ from its position")
        if math.hypot(*_cross(forward, self.up)) < 1e-9 * math.hypot(*forward) * math.hypot(*self.up):
            raise ValueError("camera up hint must not be parallel to the viewing direction")

    @property
    def focal_length(self) -> float:
        """f in pixels per radian."""
        return (min(self.height, self.width) / 2.0) / math.radians(self.fov_deg / 2.0)

    @property
    def center(self) -> tuple[float, float]:
        """Image centre (u, v) in continuous pixel coordinates."""
        return self.width / 2.0, self.height / 2.0

    @cached_property
    def rotation(self) -> np.ndarray:
        """(3, 3) world-from-camera rotation; columns are the camera's x (right), y (down), z (forward)."""
        # Plain-float cross products: np.cross costs ~20 us a call and a moving camera builds this every frame.
        forward = _normalized(tuple(a - b for a, b in zip(self.look_at, self.position)))
        right = _normalized(_cross(forward, self.up))
        down = _cross(forward, right)
        rotation = np.array([right, down, forward]).T
        rotation.flags.writeable = False
        return rotation

    def to_camera_frame(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera-frame points (x right, y down, z forward)."""
        return (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation

    def project_camera_frame(self, points_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) camera-frame points -> (uv (N, 2), depth (N,)); see `project`."""
        x, y, z = points_camera[:, 0], points_camera[:, 1], points_camera[:, 2]
        radial = np.hypot(x, y)
        theta = np.arctan2(radial, z)  # in [0, pi], finite even behind the camera
        azimuth = np.arctan2(y, x)
        radius = self.focal_length * theta
        center_u, center_v = self.center
        uv = np.stack([center_u + radius * np.cos(azimuth), center_v + radius * np.sin(azimuth)], axis=1)
        depth = np.sqrt(radial * radial + z * z)
        return uv, depth

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> (uv (N, 2) float64 pixel coordinates, depth (N,) metres).

        uv follows the module's pixel convention (pixel (i, j) has centre (j + 0.5, i + 0.5));
        depth is the euclidean distance from the camera centre. Points behind the camera still
        get a finite uv (theta up to pi); callers decide whether to draw them.
        """
        return self.project_camera_frame(self.to_camera_frame(points))

    @cached_property
    def pixel_rays(self) -> np.ndarray:
        """(H, W, 3) unit world-frame ray directions through each pixel centre (inverse of `project`)."""
        rays = camera_frame_rays(self.height, self.width, self.fov_deg) @ self.rotation.T  # (H, W, 3)
        rays.flags.writeable = False
        return rays

    def moved(self, t: float, amplitude: float = 0.05) -> FisheyeCamera:
        """This camera displaced along a smooth closed orbit; t in [0, 1], t = 0 and t = 1 give this camera.

        The offset (metres) is amplitude * (sin 2πt, (1 - cos 2πt) / 2, sin(4πt) / 4): a sideways
        sweep with a small dip in depth and height, always aimed at the same `look_at`.
        """
        phase = 2.0 * math.pi * float(t)
        offset = amplitude * np.array(
            [math.sin(phase), 0.5 * (1.0 - math.cos(phase)), 0.25 * math.sin(2.0 * phase)]
        )
        return dataclasses.replace(self, position=tuple(np.add(self.position, offset)))
