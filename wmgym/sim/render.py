"""The simulator's rasterizer: a textured table, a two-sided cloth mesh and gripper boxes.

Painter's algorithm (no z-buffer), which keeps a frame of ~600 triangles cheap on one core at
any of the supported resolutions:
1. project every cloth triangle and every camera-facing box face with the fisheye camera;
2. shade each polygon flat, Lambert with ambient: colour * (0.55 + 0.45 |n . l|);
3. sort far to near by the mean camera distance of the polygon's vertices;
4. fill them in that order with `cv2.fillConvexPoly` (sub-pixel `shift`) at `supersample`x
   resolution over a copy of the precomputed table background;
5. downsample with `cv2.resize(INTER_AREA)`, which anti-aliases the edges.

Cloth and box edges are straight in the image although the fisheye bends straight lines;
the polygons are a few centimetres across, so the error stays below a pixel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from wmgym.sim.camera import FisheyeCamera, camera_frame_rays
from wmgym.sim.cloth import row_norms

AMBIENT = 0.55
DIFFUSE = 0.45
MIN_BOX_CHANNEL = 8  # a box pixel is never exactly black, so the grippers-only view is zero exactly where empty
MAX_SUPERSAMPLED_SIDE = 512  # supersampling stops at this many pixels on the longer side
SUBPIXEL_BITS = 4  # fillConvexPoly `shift`: vertices on a 1/16-pixel grid
WALL_COLOR = np.array([58.0, 60.0, 66.0])
TABLE_FADE_DISTANCE = (1.2, 2.4)  # metres from the camera over which the table fades into the wall

# Box corners as signs of the half extents, and each face as 4 corner indices wound
# counter-clockwise seen from outside, with its outward normal as (axis, sign).
_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
_BOX_FACES = np.array(
    [[4, 6, 7, 5], [0, 1, 3, 2], [2, 3, 7, 6], [0, 4, 5, 1], [1, 5, 7, 3], [0, 2, 6, 4]]
)  # (6, 4): +x, -x, +y, -y, +z, -z
_FACE_AXES = np.array([0, 0, 1, 1, 2, 2])
_FACE_SIGNS = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])


@dataclass
class Box:
    """A solid box, e.g. one part of a gripper.

    Attributes:
        center: (3,) world position of the box centre (metres).
        rotation: (3, 3) world-from-box rotation.
        half_extents: (3,) half side lengths along the box axes (metres).
        color: (3,) RGB in [0, 255].
    """

    center: np.ndarray
    rotation: np.ndarray
    half_extents: np.ndarray
    color: np.ndarray


def _periodic_noise(rng: np.random.Generator, size: int, sigma_rows: float, sigma_cols: float) -> np.ndarray:
    """(size, size) zero-mean unit-variance noise blurred by a Gaussian (sigmas in pixels); tiles seamlessly."""
    frequencies = np.fft.fftfreq(size)
    squared = (sigma_rows * frequencies[:, None]) ** 2 + (sigma_cols * frequencies[None, :]) ** 2
    kernel = np.exp(-2.0 * np.pi**2 * squared)  # Fourier transform of the Gaussian blur
    noise = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * kernel).real
    return (noise - noise.mean()) / (noise.std() + 1e-12)


def make_table_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A tileable procedural table surface, (size, size, 3) uint8 RGB.

    Either wood (warm base colour, wavy grain stripes, fine fibres) or a checked table cloth
    (two muted colours in a gingham pattern with weave noise); the kind and colours depend on
    the generator. Both are low-saturation so a brightly coloured shirt stands out.
    """
    coordinates = np.arange(size) / size
    rows, cols = np.meshgrid(coordinates, coordinates, indexing="ij")  # (size, size) each
    fine = _periodic_noise(rng, size, 0.7, 0.7)
    if rng.random() < 0.6:  # wood
        base = np.array([150.0, 105.0, 65.0]) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20, size=3)
        warp = _periodic_noise(rng, size, size / 10, size / 10)
        num_stripes = int(rng.integers(6, 14))
        grain = np.sin(2 * np.pi * (num_stripes * rows + 0.35 * warp))
        streaks = _periodic_noise(rng, size, 0.8, 8.0)  # fibres along the grain
        shade = 0.85 + 0.1 * grain + 0.15 * streaks + 0.04 * fine
        texture = base * shade[..., None]
    else:  # checked table cloth
        light = rng.uniform(170, 230, size=3)
        dark = light * rng.uniform(0.45, 0.75, size=3)
        num_checks = int(rng.integers(4, 9))
        bands_u = (np.floor(2 * num_checks * cols) % 2)[..., None]
        bands_v = (np.floor(2 * num_checks * rows) % 2)[..., None]
        mix = 0.5 * (bands_u + bands_v)  # 0, 0.5 or 1: gingham
        texture = light * (1 - mix) + dark * mix
        texture = texture * (1.0 + 0.05 * fine[..., None])
    return np.clip(texture, 0, 255).astype(np.uint8)


@lru_cache(maxsize=16)
def _intrinsic_maps(height: int, width: int, fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-resolution constants of the table background: (3, H, W) float32 camera-frame ray
    components (contiguous planes) and the (H, W) float32 vignette, 20% darker at the corners."""
    rays = np.ascontiguousarray(camera_frame_rays(height, width, fov_deg).transpose(2, 0, 1), dtype=np.float32)
    theta = np.arccos(np.clip(rays[2], -1.0, 1.0))
    vignette = 1.0 - 0.2 * (theta / max(float(theta.max()), 1e-6)) ** 2
    return rays, vignette.astype(np.float32)


def _table_background(
    camera: FisheyeCamera, texture: np.ndarray, table_extent: float, light_dir: np.ndarray
) -> np.ndarray:
    """(H, W, 3) uint8: the textured table where rays hit z = 0, a wall above the horizon.

    Runs on every camera change (a moving camera changes every frame), so it stays lean:
    the camera-frame rays are cached per resolution and only rotated here.
    """
    (ray_x, ray_y, ray_z), vignette = _intrinsic_maps(camera.height, camera.width, camera.fov_deg)
    rotation = camera.rotation.astype(np.float32)
    world_x, world_y, world_z = (  # (H, W) each: rays in the world frame
        rotation[k, 0] * ray_x + rotation[k, 1] * ray_y + rotation[k, 2] * ray_z for k in range(3)
    )
    camera_x, camera_y, camera_height = camera.position
    near, far = TABLE_FADE_DISTANCE
    # Rays that never reach the table get distance `far`, i.e. fully faded into the wall.
    distance = np.float32(camera_height) / np.maximum(-world_z, np.float32(camera_height / far))  # (H, W)
    size_rows, size_cols = texture.shape[:2]
    # Texture coordinates modulo the tile (remap's BORDER_WRAP covers one repeat only).
    tile_x = (distance * world_x + np.float32(camera_x + table_extent)) * np.float32(0.5 / table_extent)
    tile_y = (distance * world_y + np.float32(camera_y + table_extent)) * np.float32(0.5 / table_extent)
    map_x = (tile_x - np.floor(tile_x)) * size_cols - 0.5
    map_y = (tile_y - np.floor(tile_y)) * size_rows - 0.5
    table = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    # Far table (grazing rays) aliases badly, so it fades into the wall with distance.
    fade = np.clip((distance - np.float32(near)) * np.float32(1.0 / (far - near)), 0.0, 1.0)  # (H, W)
    table_shade = AMBIENT + DIFFUSE * float(light_dir[2])
    wall = np.empty_like(table)
    wall[:] = np.rint(WALL_COLOR / table_shade).astype(np.uint8)  # unshaded, so shading gives WALL_COLOR
    blended = cv2.blendLinear(table, wall, 1.0 - fade, fade)  # (H, W, 3) uint8
    shade = vignette * np.float32(table_shade)  # (H, W), <= 1
    return cv2.multiply(blended, cv2.merge([shade, shade, shade]), dtype=cv2.CV_8U)


class Renderer:
    """Draws frames of the cloth scene for one (possibly moving) fisheye camera.

    Args:
        camera: the camera; `set_camera` swaps it between frames.
        table_texture: (S, S, 3) uint8 RGB covering [-table_extent, table_extent]^2 of the z = 0
            plane (texture rows along +y, columns along +x) and repeating outside it.
        table_extent: half size of the texture's footprint (metres).
        supersample: rendering scale before the INTER_AREA downsample; capped so the
            supersampled image's longer side stays <= `MAX_SUPERSAMPLED_SIDE`.
        light_dir: world-frame direction towards the light.
        height_bias: painter's order sorts polygons by (distance to the camera - height_bias *
            world height z). Layers of folded cloth lie one thickness (1.8 cm) apart while
            neighbouring triangles' centres differ by more than that in distance, so pure
            distance sorting lets the lower layer speckle through the upper one; for a
            camera looking down at a table, higher surfaces are nearer, and the bias says so.
    """

    def __init__(
        self,
        camera: FisheyeCamera,
        table_texture: np.ndarray,
        table_extent: float = 0.6,
        supersample: int = 2,
        light_dir=(0.3, -0.4, 1.0),
        height_bias: float = 1.5,
    ):
        texture = np.asarray(table_texture)
        if texture.ndim != 3 or texture.shape[2] != 3:
            raise ValueError(f"table_texture must be (S, S, 3), got shape {texture.shape}")
        self.table_texture = np.ascontiguousarray(texture, dtype=np.uint8)
        self.table_extent = float(table_extent)
        self.supersample = max(1, int(supersample))
        light = np.asarray(light_dir, dtype=np.float64)
        self.light_dir = light / np.linalg.norm(light)
        self.height_bias = float(height_bias)
        self.camera: FisheyeCamera | None = None
        self.set_camera(camera)

    def set_camera(self, camera: FisheyeCamera) -> None:
        """Use `camera` from now on; the table background is recomputed only if it changed."""
        if camera == self.camera:
            return
        self.camera = camera
        longer = max(camera.height, camera.width)
        self.scale = max(1, min(self.supersample, MAX_SUPERSAMPLED_SIDE // longer))
        fine_camera = dataclasses.replace(camera, height=camera.height * self.scale, width=camera.width * self.scale)
        # (sH, sW, 3) uint8
        self._background = _table_background(fine_camera, self.table_texture, self.table_extent, self.light_dir)
        self._black = np.zeros_like(self._background)

    def _shade(self, colors: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """(P, 3) base colours and unit normals -> (P, 3) flat Lambert-shaded colours (float)."""
        return colors * (AMBIENT + DIFFUSE * np.abs((normals * self.light_dir).sum(-1)))[:, None]  # elementwise: row-independent

    def _to_canvas(self, uv: np.ndarray) -> np.ndarray:
        """(..., 2) continuous output-pixel coords -> int32 fixed-point supersampled-canvas coords."""
        # Canvas pixel k has its centre at output coordinate (k + 0.5) / scale; OpenCV puts it at k.
        return np.rint((uv * self.scale - 0.5) * (1 << SUBPIXEL_BITS)).astype(np.int32)

    def _is_drawable(self, uv: np.ndarray, forward: np.ndarray) -> np.ndarray:
        """(P, K, 2) polygon uv, (P, K) camera-frame z -> (P,) bool: in front and near the image."""
        height, width = self.camera.height, self.camera.width
        in_margin = (
            (uv[..., 0] > -width) & (uv[..., 0] < 2 * width) & (uv[..., 1] > -height) & (uv[..., 1] < 2 * height)
        )
        return np.all(in_margin & (forward > 1e-4), axis=1)

    def _cloth_polygons(self, positions, faces, front_color, back_color):
        """Cloth triangles -> the drawn ones' uv (P, 3, 2), depth (P,) and shaded colour (P, 3).

        The per-triangle arithmetic is spelled out per corner and per axis (gathers with `take`,
        the cross product and the corner means written out): the same operations in the same
        order as `np.cross` and `mean(axis=1)`, without their overhead on a few hundred rows."""
        positions = np.asarray(positions, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        points_camera = self.camera.to_camera_frame(positions)  # (N, 3)
        uv, distance = self.camera.project_camera_frame(points_camera)
        corners = positions.take(faces, axis=0)  # (F, 3, 3)
        first, second, third = corners[:, 0], corners[:, 1], corners[:, 2]
        a, b = second - first, third - first
        normals = np.empty_like(a)  # (F, 3): a x b
        normals[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
        normals[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
        normals[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
        normals /= (row_norms(normals) + 1e-12)[:, None]
        to_camera = np.asarray(self.camera.position) - (first + second + third) / 3  # (F, 3)
        is_front = np.einsum("fi,fi->f", normals, to_camera) > 0
        colors = np.where(is_front[:, None], np.asarray(front_color, np.float64), np.asarray(back_color, np.float64))
        colors = self._shade(colors, normals)
        uv_faces = uv.take(faces, axis=0)  # (F, 3, 2)
        keep = self._is_drawable(uv_faces, points_camera[:, 2].take(faces))
        corner_distance = distance.take(faces)  # (F, 3)
        mean_distance = (corner_distance[:, 0] + corner_distance[:, 1] + corner_distance[:, 2]) / 3
        depth = mean_distance - self.height_bias * ((first[:, 2] + second[:, 2] + third[:, 2]) / 3)
        return uv_faces[keep], depth[keep], colors[keep]

    def _box_polygons(self, centers, rotations, half_extents, base_colors):
        """Boxes as arrays: centres (N, 3), world-from-box rotations (N, 3, 3), half extents (N, 3)
        and colours (N, 3) -> every face's uv (N*6, 4, 2), depth (N*6,), shaded colour (N*6, 3) and
        whether it is drawn (N*6,) (facing the camera, in front, near the image). Each box's
        numbers are sums of elementwise products, so a box gives the same polygons however many
        are computed at once (one frame's, or a vector env's rows in one call)."""
        centers, rotations = np.asarray(centers, np.float64), np.asarray(rotations, np.float64)
        half_extents = np.asarray(half_extents, np.float64)
        offsets = _CORNER_SIGNS[None] * half_extents[:, None]  # (N, 8, 3) in the box frame
        corners = centers[:, None] + (rotations[:, None] * offsets[:, :, None, :]).sum(-1)  # (N, 8, 3)
        normals = rotations[:, :, _FACE_AXES].transpose(0, 2, 1) * _FACE_SIGNS[None, :, None]  # (N, 6, 3)
        face_centers = centers[:, None] + normals * half_extents[:, _FACE_AXES][..., None]  # (N, 6, 3)
        to_camera = np.asarray(self.camera.position) - face_centers
        is_visible = (normals * to_camera).sum(-1) > 0  # (N, 6) back-face culling
        points = corners.reshape(-1, 3) - np.asarray(self.camera.position, np.float64)
        points_camera = (points[:, :, None] * np.asarray(self.camera.rotation, np.float64)[None]).sum(1)  # (N*8, 3)
        uv, distance = self.camera.project_camera_frame(points_camera)  # (N*8, 2), (N*8,)
        vertex_index = (np.arange(len(centers))[:, None, None] * 8 + _BOX_FACES[None]).reshape(-1, 4)  # (N*6, 4)
        colors = np.repeat(np.asarray(base_colors, np.float64), 6, axis=0)  # (N*6, 3)
        colors = np.maximum(self._shade(colors, normals.reshape(-1, 3)), MIN_BOX_CHANNEL)
        uv_faces = uv[vertex_index]  # (N*6, 4, 2)
        keep = is_visible.reshape(-1) & self._is_drawable(uv_faces, points_camera[vertex_index, 2])
        depth = distance[vertex_index].mean(axis=1) - self.height_bias * corners.reshape(-1, 3)[vertex_index, 2].mean(axis=1)
        return uv_faces, depth, colors, keep

    def render_boxes(self, centers: np.ndarray, rotations: np.ndarray, half_extents: np.ndarray, colors: np.ndarray,
                     draw_table: bool = False) -> np.ndarray:
        """b frames of boxes alone, (b, H, W, 3) uint8: what `render` draws for each row's boxes
        without cloth, bit for bit, with the polygons of all rows computed in one call.

        Args:
            centers: (b, P, 3) box centres (world, metres).
            rotations: (b, P, 3, 3) world-from-box rotations.
            half_extents: (P, 3) half side lengths, the same in every row.
            colors: (P, 3) RGB in [0, 255].
            draw_table: as in `render`.
        """
        centers = np.asarray(centers, np.float64)
        b, count = centers.shape[:2]
        uv, depth, shaded, keep = self._box_polygons(centers.reshape(-1, 3), np.asarray(rotations).reshape(-1, 3, 3),
                                                     np.tile(half_extents, (b, 1)), np.tile(colors, (b, 1)))
        faces = count * 6
        out = np.empty((b, self.camera.height, self.camera.width, 3), np.uint8)
        for row in range(b):
            rows = slice(row * faces, (row + 1) * faces)
            kept = keep[rows]
            out[row] = self._draw(draw_table, [(uv[rows][kept], depth[rows][kept], shaded[rows][kept])])
        return out

    def _draw(self, draw_table: bool, polygon_sets) -> np.ndarray:
        """Fill the polygons of (uv (P, K, 2), depth (P,), colour (P, 3)) sets far to near over the
        table (or black), then downsample: (H, W, 3) uint8."""
        canvas = (self._background if draw_table else self._black).copy()
        polygons = [polygon for uv, _, _ in polygon_sets for polygon in self._to_canvas(uv)]
        if polygons:
            order = np.argsort(-np.concatenate([d for _, d, _ in polygon_sets]), kind="stable").tolist()  # far to near
            color_list = np.rint(np.clip(np.concatenate([c for _, _, c in polygon_sets]), 0, 255)).astype(np.int64).tolist()
            fill, line_type, shift = cv2.fillConvexPoly, cv2.LINE_8, SUBPIXEL_BITS  # locals: ~600 calls a frame
            for index in order:
                fill(canvas, polygons[index], color_list[index], line_type, shift)
        if self.scale == 1:
            return canvas
        return cv2.resize(canvas, (self.camera.width, self.camera.height), interpolation=cv2.INTER_AREA)

    def render(
        self,
        cloth_positions: np.ndarray | None,
        faces: np.ndarray | None,
        front_color,
        back_color,
        boxes: list[Box],
        draw_table: bool = True,
    ) -> np.ndarray:
        """One frame, (H, W, 3) uint8 RGB.

        Args:
            cloth_positions: (N, 3) cloth particle positions (world, metres), or None for no cloth.
            faces: (F, 3) int triangle indices into `cloth_positions`, or None.
            front_color, back_color: (3,) RGB of the side whose winding normal
                (v1 - v0) x (v2 - v0) faces the camera, and of the other side.
            boxes: solid boxes (grippers), drawn with back-face culling.
            draw_table: False renders on pure black: pixels nothing covers are exactly 0.
        """
        return self._draw(draw_table, self._cloth_sets(cloth_positions, faces, front_color, back_color)
                          + self._box_sets(boxes))

    def render_with_boxes_alone(self, cloth_positions: np.ndarray, faces: np.ndarray, front_color, back_color,
                                boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
        """`render(cloth_positions, faces, front_color, back_color, boxes)` and the boxes alone on
        black, `render(None, None, front_color, back_color, boxes, draw_table=False)`, bit for bit:
        two (H, W, 3) uint8 frames from one projection of the boxes."""
        box_sets = self._box_sets(boxes)
        scene = self._draw(True, self._cloth_sets(cloth_positions, faces, front_color, back_color) + box_sets)
        return scene, self._draw(False, box_sets)

    def _cloth_sets(self, cloth_positions, faces, front_color, back_color) -> list[tuple]:
        """`_draw`'s polygon sets of the cloth: one, or none without cloth."""
        if cloth_positions is None or faces is None or not len(faces):
            return []
        return [self._cloth_polygons(cloth_positions, faces, front_color, back_color)]

    def _box_sets(self, boxes: list[Box]) -> list[tuple]:
        """`_draw`'s polygon sets of the boxes: one, or none without boxes."""
        if not boxes:
            return []
        uv, depth, color, keep = self._box_polygons([box.center for box in boxes], [box.rotation for box in boxes],
                                                    [box.half_extents for box in boxes], [box.color for box in boxes])
        return [(uv[keep], depth[keep], color[keep])]
