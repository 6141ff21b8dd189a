"""Specs for the fisheye camera (`wmgym.sim.camera`) and the rasterizer (`wmgym.sim.render`)."""

import math

import numpy as np
import pytest

from wmgym.sim.camera import MIN_RESOLUTION, FisheyeCamera
from wmgym.sim.cloth import make_shirt_mesh
from wmgym.sim.render import Box, Renderer, make_table_texture

FRONT = (220, 40, 40)
BACK = (40, 40, 220)


def make_renderer(height=64, width=64, seed=0) -> Renderer:
    return Renderer(FisheyeCamera(height, width), make_table_texture(np.random.default_rng(seed)))


def small_box(center, color=(230, 20, 20), half=0.02) -> Box:
    return Box(np.asarray(center, float), np.eye(3), np.full(3, half), np.asarray(color, float))


def cloth_square(height, half=0.1, flipped=False):
    """Two triangles covering [-half, half]^2 at z = height, wound counter-clockwise seen from above."""
    positions = np.array([[-half, -half, height], [half, -half, height], [half, half, height], [-half, half, height]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return positions, (faces[:, [0, 2, 1]] if flipped else faces)


def projected_bbox(camera, box, margin):
    corners = box.center + np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * box.half_extents
    uv, _ = camera.project(corners)
    u0, v0 = np.floor(uv.min(axis=0) - margin).astype(int)
    u1, v1 = np.ceil(uv.max(axis=0) + margin).astype(int)
    mask = np.zeros((camera.height, camera.width), bool)
    mask[max(v0, 0) : max(v1, 0), max(u0, 0) : max(u1, 0)] = True
    return mask


def pixel_of(camera, point):
    uv, _ = camera.project(np.asarray(point, float)[None])
    u, v = np.floor(uv[0]).astype(int)
    return v, u


# Camera


@pytest.mark.parametrize("height, width", [(MIN_RESOLUTION - 1, 64), (64, 8), (0, 0)])
def test_too_small_resolution_raises(height, width):
    with pytest.raises(ValueError, match="too small for the fisheye camera model"):
        FisheyeCamera(height, width)


def test_non_integer_resolution_and_bad_fov_raise():
    with pytest.raises(ValueError):
        FisheyeCamera(64.0, 64)
    for fov in (0.0, 300.0, -10.0):
        with pytest.raises(ValueError):
            FisheyeCamera(64, 64, fov_deg=fov)


@pytest.mark.parametrize("height, width", [(64, 64), (40, 72)])
def test_project_inverts_pixel_rays(height, width):
    camera = FisheyeCamera(height, width)
    rays = camera.pixel_rays  # (H, W, 3)
    assert np.allclose(np.linalg.norm(rays, axis=-1), 1.0)
    points = np.asarray(camera.position) + 0.7 * rays.reshape(-1, 3)
    uv, depth = camera.project(points)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    assert np.abs(uv - centres).max() < 0.5
    assert np.allclose(depth, 0.7)


def test_optical_axis_projects_to_image_centre():
    camera = FisheyeCamera(48, 80)
    axis_point = np.asarray(camera.position) + 2.0 * (np.asarray(camera.look_at) - camera.position)
    uv, _ = camera.project(axis_point[None])
    assert np.allclose(uv[0], [40.0, 24.0])


@pytest.mark.parametrize("theta_deg", [10.0, 45.0, 60.0, 100.0])
def test_angle_maps_to_radius_f_theta(theta_deg):
    camera = FisheyeCamera(64, 64)
    f = 32.0 / math.radians(60.0)
    theta = math.radians(theta_deg)
    rotation = camera.rotation  # columns: right, down, forward
    for azimuth in (0.0, 1.0, 2.5):
        direction_camera = [math.sin(theta) * math.cos(azimuth), math.sin(theta) * math.sin(azimuth), math.cos(theta)]
        point = np.asarray(camera.position) + 0.5 * rotation @ direction_camera
        uv, _ = camera.project(point[None])
        assert np.hypot(*(uv[0] - 32.0)) == pytest.approx(f * theta, rel=1e-9)


def test_moved_camera_starts_at_rest_and_orbits_smoothly():
    camera = FisheyeCamera(64, 64)
    assert camera.moved(0.0).position == pytest.approx(camera.position)
    positions = np.array([camera.moved(t).position for t in np.linspace(0, 1, 41)])
    offsets = np.linalg.norm(positions - camera.position, axis=1)
    assert 0.0 < offsets.max() <= 0.05 * 1.2
    assert np.linalg.norm(np.diff(positions, axis=0), axis=1).max() < 0.01
    assert camera.moved(0.3).look_at == camera.look_at


# Renderer


def test_box_changes_only_pixels_near_its_projection():
    renderer = make_renderer()
    box = small_box([0.05, 0.0, 0.1])
    empty = renderer.render(None, None, FRONT, BACK, [])
    with_box = renderer.render(None, None, FRONT, BACK, [box])
    changed = np.any(empty != with_box, axis=-1)
    assert changed.sum() >= 4
    assert not np.any(changed & ~projected_bbox(renderer.camera, box, margin=1.0))


def test_grippers_view_is_exactly_zero_away_from_box():
    renderer = make_renderer()
    box = Box(np.array([-0.1, 0.05, 0.08]), np.eye(3), np.full(3, 0.02), np.array([0.0, 0.0, 0.0]))
    image = renderer.render(None, None, FRONT, BACK, [box], draw_table=False)
    on_box = projected_bbox(renderer.camera, box, margin=0.0)
    assert np.all(image[~projected_bbox(renderer.camera, box, margin=1.0)] == 0)
    v, u = pixel_of(renderer.camera, box.center + [0, 0, 0.02])
    assert image[v, u].min() > 0  # even a black box stays distinguishable from empty
    assert on_box.any()


@pytest.mark.parametrize("is_flipped, expected, other", [(False, FRONT, BACK), (True, BACK, FRONT)])
def test_cloth_side_facing_camera_picks_colour(is_flipped, expected, other):
    renderer = make_renderer()
    positions, faces = cloth_square(0.05, flipped=is_flipped)
    image = renderer.render(positions, faces, FRONT, BACK, []).astype(float)
    v, u = pixel_of(renderer.camera, [0.0, 0.0, 0.05])
    pixel = image[v - 1 : v + 2, u - 1 : u + 2].reshape(-1, 3)  # (9, 3) around the centre
    shaded = np.asarray(expected) * np.array([0.55, 1.0])[:, None]  # ambient-only .. fully lit
    assert np.all((pixel >= shaded[0] - 2) & (pixel <= shaded[1] + 2))
    assert np.linalg.norm(pixel.mean(0) - expected) < np.linalg.norm(pixel.mean(0) - other)


def test_nearer_polygon_wins():
    renderer = make_renderer()
    red, blue = (230, 20, 20), (20, 20, 230)
    box = small_box([0.0, 0.0, 0.1], red)
    positions, faces = cloth_square(0.0)
    image = renderer.render(positions, faces, blue, blue, [box])
    v, u = pixel_of(renderer.camera, [0.0, 0.0, 0.12])
    assert image[v, u, 0] > 100 and image[v, u, 2] < 50  # the box is above the cloth: red

    box = small_box([0.0, 0.0, 0.02], red)
    positions, faces = cloth_square(0.1)
    image = renderer.render(positions, faces, blue, blue, [box])
    v, u = pixel_of(renderer.camera, [0.0, 0.0, 0.1])
    assert image[v, u, 2] > 100 and image[v, u, 0] < 50  # the cloth is above the box: blue


def test_box_back_faces_are_culled():
    renderer = make_renderer()
    drawn = lambda box: int(renderer._box_polygons([box.center], [box.rotation], [box.half_extents], [box.color])[3].sum())
    assert drawn(small_box([0.1, 0.0, 0.1])) == 3  # off to the side: the top, the near (-y) and the inner (-x) face
    assert drawn(small_box([0.0, 0.0, 0.1])) == 2  # straight ahead the x faces are edge-on: the top and the near face


def test_render_with_boxes_alone_is_both_renders_bit_for_bit():
    renderer = make_renderer()
    positions, faces = cloth_square(0.01)
    boxes = [small_box([0.1, 0.0, 0.1]), small_box([-0.05, 0.02, 0.005], (20, 200, 20))]
    scene, alone = renderer.render_with_boxes_alone(positions, faces, FRONT, BACK, boxes)
    np.testing.assert_array_equal(scene, renderer.render(positions, faces, FRONT, BACK, boxes))
    np.testing.assert_array_equal(alone, renderer.render(None, None, FRONT, BACK, boxes, draw_table=False))
    assert alone.any() and not np.array_equal(scene, alone)


def test_cloth_polygons_are_numpys_cross_products_and_means_bit_for_bit():
    """The triangle arithmetic written out per corner gives what np.cross, np.linalg.norm and
    mean(axis=1) give, on a crumpled shirt with triangles facing both ways."""
    renderer = make_renderer()
    mesh = make_shirt_mesh()
    rng = np.random.default_rng(0)
    positions = mesh.rest_positions + rng.normal(0.0, 0.01, mesh.rest_positions.shape)
    uv, depth, colors = renderer._cloth_polygons(positions, mesh.faces, FRONT, BACK)
    corners = positions[mesh.faces]  # (F, 3, 3)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    is_front = np.einsum("fi,fi->f", normals, np.asarray(renderer.camera.position) - corners.mean(axis=1)) > 0
    assert is_front.any() and not is_front.all()
    expected_colors = renderer._shade(np.where(is_front[:, None], np.float64(FRONT), np.float64(BACK)), normals)
    points_uv, distance = renderer.camera.project(positions)
    expected_depth = distance[mesh.faces].mean(axis=1) - renderer.height_bias * corners[:, :, 2].mean(axis=1)
    keep = renderer._is_drawable(points_uv[mesh.faces], renderer.camera.to_camera_frame(positions)[mesh.faces, 2])
    np.testing.assert_array_equal(colors, expected_colors[keep])
    np.testing.assert_array_equal(depth, expected_depth[keep])
    np.testing.assert_array_equal(uv, points_uv[mesh.faces][keep])


@pytest.mark.parametrize("height, width", [(64, 64), (128, 128), (320, 512)])
def test_render_shape_and_dtype(height, width):
    renderer = make_renderer(height, width)
    positions, faces = cloth_square(0.01)
    for draw_table in (True, False):
        image = renderer.render(positions, faces, FRONT, BACK, [small_box([0.1, 0, 0.1])], draw_table=draw_table)
        assert image.shape == (height, width, 3) and image.dtype == np.uint8


def test_table_background_tracks_camera_changes():
    renderer = make_renderer()
    still = renderer.render(None, None, FRONT, BACK, [])
    renderer.set_camera(renderer.camera.moved(0.25))
    moved = renderer.render(None, None, FRONT, BACK, [])
    renderer.set_camera(FisheyeCamera(64, 64))
    assert np.abs(moved.astype(int) - still).mean() > 2.0
    assert np.array_equal(renderer.render(None, None, FRONT, BACK, []), still)


def test_texture_depends_on_seed_and_tiles():
    first = make_table_texture(np.random.default_rng(0), size=64)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, make_table_texture(np.random.default_rng(0), size=64))
    assert not np.array_equal(first, make_table_texture(np.random.default_rng(1), size=64))
