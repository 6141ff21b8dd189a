"""T-shirt mesh and position-based dynamics (physics only: state in, state out).

The shirt is a masked square grid (body, two sleeves, a neck opening) in the *shirt frame*
(metres, x to the shirt's right as seen from the camera, y toward the collar, on the table).
`ClothSim.step` advances one substep of position-based dynamics (Müller et al. 2007) with
Jacobi-averaged distance constraints (stretch, shear, bending), gravity, damping, table
contact with friction and particle-particle self-collision at a fixed thickness, so that a
folded layer rests on the layer below. Written by hand: no maintained library does
vectorised cloth PBD in NumPy; every constraint pass is a few array operations and one
sparse matrix product, never a Python loop over particles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy.spatial import cKDTree

GRAVITY = np.array([0.0, 0.0, -9.81])


def row_norms(a: np.ndarray) -> np.ndarray:
    """Euclidean norms (m,) of the rows of `a` (m, 2) or (m, 3): `np.linalg.norm(a, axis=1)` bit for
    bit (the same squares summed in the same order), without its reduction over a short axis,
    which costs ~3x as much on the simulator's few hundred rows."""
    total = a[:, 0] * a[:, 0]
    for k in range(1, a.shape[1]):
        total += a[:, k] * a[:, k]
    return np.sqrt(total)


@dataclass(frozen=True)
class ShirtShape:
    """Shirt template in the shirt frame (metres). The defaults give 337 particles and 584 triangles."""

    spacing: float = 0.023
    body_half_width: float = 0.17
    body_bottom: float = -0.23
    body_top: float = 0.17
    sleeve_length: float = 0.14
    sleeve_bottom: float = 0.04
    neck_half_width: float = 0.05
    neck_depth: float = 0.03

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        eps = 1e-9
        body = (np.abs(x) <= self.body_half_width + eps) & (y >= self.body_bottom - eps) & (y <= self.body_top + eps)
        sleeve = (
            (np.abs(x) <= self.body_half_width + self.sleeve_length + eps)
            & (y >= self.sleeve_bottom - eps)
            & (y <= self.body_top + eps)
        )
        neck = (np.abs(x) < self.neck_half_width - eps) & (y > self.body_top - self.neck_depth + eps)
        return (body | sleeve) & ~neck


@dataclass(frozen=True)
class ClothMesh:
    """Particles and topology of the shirt.

    Attributes:
        rest_positions: (n, 3) particle positions in the shirt frame, z = 0.
        faces: (f, 3) int triangle indices, counter-clockwise seen from +z (the front side).
        edges: (e, 2) int constraint endpoints; `rest_lengths` (e,), `stiffness` (e,).
        grid_index: (n, 2) int (column, row) of each particle in the template grid.
    """

    rest_positions: np.ndarray
    faces: np.ndarray
    edges: np.ndarray
    rest_lengths: np.ndarray
    stiffness: np.ndarray
    grid_index: np.ndarray
    spacing: float

    @property
    def num_particles(self) -> int:
        return int(self.rest_positions.shape[0])


def make_shirt_mesh(
    shape: ShirtShape = ShirtShape(),
    stretch_stiffness: float = 1.0,
    shear_stiffness: float = 0.6,
    bend_stiffness: float = 0.15,
) -> ClothMesh:
    """Build the t-shirt grid mesh with its stretch, shear and bending constraints."""
    d = shape.spacing
    half = int(np.ceil((shape.body_half_width + shape.sleeve_length) / d))
    cols = np.arange(-half, half + 1)
    rows = np.arange(int(np.floor(shape.body_bottom / d)), int(np.ceil(shape.body_top / d)) + 1)
    cc, rr = np.meshgrid(cols, rows, indexing="xy")  # (rows, cols)
    inside = shape.contains(cc * d, rr * d)
    index = -np.ones(inside.shape, dtype=np.int64)
    index[inside] = np.arange(int(inside.sum()))
    grid = np.stack([cc[inside], rr[inside]], axis=1)
    rest = np.stack([grid[:, 0] * d, grid[:, 1] * d, np.zeros(len(grid))], axis=1)

    def pairs(dr: int, dc: int) -> np.ndarray:
        """(k, 2) particle pairs (row, col) -> (row + dr, col + dc) that are both cloth."""
        r, c = np.nonzero(index >= 0)
        r2, c2 = r + dr, c + dc
        ok = (r2 >= 0) & (r2 < index.shape[0]) & (c2 >= 0) & (c2 < index.shape[1])
        a, b = index[r[ok], c[ok]], index[r2[ok], c2[ok]]
        return np.stack([a[b >= 0], b[b >= 0]], axis=1)

    groups = [
        (pairs(0, 1), stretch_stiffness),
        (pairs(1, 0), stretch_stiffness),
        (pairs(1, 1), shear_stiffness),
        (pairs(1, -1), shear_stiffness),
        (pairs(0, 2), bend_stiffness),
        (pairs(2, 0), bend_stiffness),
    ]
    edges = np.concatenate([g for g, _ in groups])
    stiffness = np.concatenate([np.full(len(g), k) for g, k in groups])
    rest_lengths = np.linalg.norm(rest[edges[:, 1]] - rest[edges[:, 0]], axis=1)

    # Two triangles per grid cell whose four corners are all cloth, wound counter-clockwise
    # seen from +z so the front of the fabric faces up at rest.
    a = index[:-1, :-1]
    b = index[:-1, 1:]
    c = index[1:, 1:]
    e = index[1:, :-1]
    cell = (a >= 0) & (b >= 0) & (c >= 0) & (e >= 0)
    faces = np.concatenate(
        [np.stack([a[cell], b[cell], c[cell]], 1), np.stack([a[cell], c[cell], e[cell]], 1)]
    )
    return ClothMesh(rest, faces, edges, rest_lengths, stiffness, grid, d)


@dataclass
class ClothState:
    """Mutable physical state: positions and velocities (n, 3) in the world frame, metres."""

    positions: np.ndarray
    velocities: np.ndarray


class ClothSim:
    """Position-based dynamics for one `ClothMesh`.

    Args:
        mesh: the shirt.
        thickness: self-collision distance between particles that are not rest neighbours;
            it is also how far a folded layer sits above the one below (metres).
        table_offset: particles' resting height above the table (half the fabric thickness).
        friction: fraction of a touching particle's tangential motion the table removes per
            substep; a move shorter than `friction` x its penetration depth is removed entirely.
        damping: fraction of velocity lost per substep (air drag).
        iterations: constraint passes per substep.
        relaxation: over-relaxation factor of the Jacobi-averaged corrections.
    """

    def __init__(
        self,
        mesh: ClothMesh,
        thickness: float | None = None,
        table_offset: float = 0.003,
        friction: float = 0.6,
        damping: float = 0.03,
        iterations: int = 3,
        relaxation: float = 1.6,
    ):
        self.mesh = mesh
        n = mesh.num_particles
        self.thickness = 0.8 * mesh.spacing if thickness is None else thickness
        self.table_offset = table_offset
        self.friction = friction
        self.damping = damping
        self.iterations = iterations
        self.relaxation = relaxation
        edges = mesh.edges
        e = len(edges)
        # Signed incidence matrix (n, e): +1 at an edge's first particle, -1 at its second,
        # so one sparse product accumulates every constraint's correction per particle.
        rows = np.concatenate([edges[:, 0], edges[:, 1]])
        cols = np.concatenate([np.arange(e), np.arange(e)])
        vals = np.concatenate([np.ones(e), -np.ones(e)])
        self._incidence = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(n, e))
        self._degree = np.maximum(np.bincount(rows, minlength=n), 1).astype(np.float64)
        # Contiguous endpoint indices for `take`: row gathers through a strided fancy index
        # (x[edges[:, 1]]) cost three times as much, and the solver gathers 2e rows a pass.
        self._first = np.ascontiguousarray(edges[:, 0])
        self._second = np.ascontiguousarray(edges[:, 1])
        # Most substeps hold nothing: their masses and constraint weights are the same every time.
        free = np.ones(n)
        free.flags.writeable = False
        self._free_weights = (free, *self._constraint_weights(free))
        # Tether limits (n, n): 1.03 x every pair's distance in the flat template.
        rest = mesh.rest_positions
        self._tether_limits = 1.03 * row_norms((rest[None] - rest[:, None]).reshape(-1, 3)).reshape(n, n)
        # Only the direct grid neighbours are exempt from self-collision. A wider exemption
        # (every pair within ~2 spacings) let the two layers at a fold's crease, which are
        # two rows apart in the template, sink into each other.
        tree = cKDTree(mesh.rest_positions)
        near = tree.query_pairs(1.05 * mesh.spacing, output_type="ndarray")
        self._is_excluded = np.zeros(n * n, dtype=bool)  # at i * n + j: pair (i, j), i < j, is exempt
        self._is_excluded[near[:, 0] * n + near[:, 1]] = True

    def settle_state(self, positions: np.ndarray) -> ClothState:
        """A state at `positions` with zero velocity."""
        return ClothState(np.array(positions, dtype=np.float64), np.zeros_like(positions, dtype=np.float64))

    def step(
        self,
        state: ClothState,
        dt: float,
        pinned_index: np.ndarray | None = None,
        pinned_targets: np.ndarray | None = None,
        obstacles: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    ) -> ClothState:
        """One PBD substep of length `dt` seconds; returns the new state (inputs untouched).

        Args:
            pinned_index: (k,) particles held by the grippers; they move kinematically to
                `pinned_targets` (k, 3) and ignore constraints (infinite mass).
            obstacles: boxes `(center (3,), rotation (3, 3), half_extents (3,))` that push
                particles out (the gripper fingers).
        """
        x0 = state.positions
        v = state.velocities * (1.0 - self.damping) + GRAVITY * dt
        # Cap the free-flight move per substep at half the thickness, so a falling layer
        # cannot cross the one below within one substep (a cheap continuous-collision stand-in).
        speed = row_norms(v)[:, None] * dt
        v = v * np.minimum(1.0, 0.5 * self.thickness / np.maximum(speed, 1e-12))
        x = x0 + v * dt
        is_pinned = pinned_index is not None and len(pinned_index) > 0
        if is_pinned:
            x[pinned_index] = pinned_targets
            inv_mass = np.ones(len(x))
            inv_mass[pinned_index] = 0.0
            edge_weight, gain = self._constraint_weights(inv_mass)
        else:
            inv_mass, edge_weight, gain = self._free_weights
        for _ in range(self.iterations):
            x = self._solve_distances(x, edge_weight, gain)
        if is_pinned:
            x = self._solve_tethers(x, pinned_index, inv_mass)
        x = self._solve_self_collision(x, x0, inv_mass)
        if obstacles:
            x = self._solve_obstacles(x, inv_mass, obstacles)
        x = self._solve_table(x, x0)
        return ClothState(x, (x - x0) / dt)

    def _constraint_weights(self, inv_mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the distance passes of a substep share, from the particles' inverse masses (n,):
        each constraint's summed inverse mass (e,) (floored above 0) and each particle's
        relaxed Jacobi gain, relaxation x inverse mass / constraint count, (n, 1)."""
        edge_weight = np.maximum(inv_mass[self._first] + inv_mass[self._second], 1e-12)
        return edge_weight, (self.relaxation * inv_mass / self._degree)[:, None]

    def _solve_distances(self, x: np.ndarray, edge_weight: np.ndarray, gain: np.ndarray) -> np.ndarray:
        """One Jacobi pass over the distance constraints; `edge_weight` and `gain` from `_constraint_weights`."""
        m = self.mesh
        delta = x.take(self._second, axis=0) - x.take(self._first, axis=0)  # (e, 3)
        length = np.sqrt(np.einsum("ij,ij->i", delta, delta)) + 1e-12
        scale = m.stiffness * (length - m.rest_lengths) / (length * edge_weight)
        correction = self._incidence @ (scale[:, None] * delta)  # (n, 3)
        return x + gain * correction

    def _solve_tethers(self, x: np.ndarray, pinned_index: np.ndarray, inv_mass: np.ndarray) -> np.ndarray:
        """Long-range attachments (Kim et al. 2012): no free particle may be farther from a
        held particle than their distance in the flat template. A few Jacobi passes leave
        PBD cloth visibly elastic when lifted by one point; tethers remove that stretch at
        the cost of one (n, k) distance table."""
        free = inv_mass > 0
        for j in pinned_index:
            delta = x - x[j]  # (n, 3)
            length = row_norms(delta) + 1e-12
            limit = self._tether_limits[j]
            over = (length > limit) & free
            x[over] -= ((length[over] - limit[over]) / length[over])[:, None] * delta[over]
        return x

    def _solve_self_collision(self, x: np.ndarray, x0: np.ndarray, inv_mass: np.ndarray) -> np.ndarray:
        """Keep non-neighbouring particles `thickness` apart, preserving which layer is on top.

        A pair that was stacked at the start of the substep (vertical gap > a quarter of the
        thickness) is separated vertically, with the lower particle fixed if the table
        supports it; otherwise it is pushed apart along the line between the two. Resolving
        along that line alone lets a falling layer that arrives level with the one below
        slide into it sideways, and the fold is lost.
        """
        n = len(x)
        z, z0 = x[:, 2], x0[:, 2]
        if z.max() < self.table_offset + 0.25 * self.thickness:
            # Everything lies in one layer on the table: nothing can be stacked, and the
            # neighbour search is the costliest part of a substep.
            return x
        pairs = cKDTree(x).query_pairs(self.thickness, output_type="ndarray")
        if len(pairs) == 0:
            return x
        pairs = pairs[~self._is_excluded.take(pairs[:, 0] * n + pairs[:, 1])]
        if len(pairs) == 0:
            return x
        # Order each pair as (lower, upper) by height at the start of the substep; between
        # two particles at the same height the one that moved more this substep is the one
        # arriving on top (the layer below rests, held by friction).
        a, b = pairs[:, 0], pairs[:, 1]
        dz0 = z0.take(b) - z0.take(a)
        moved = row_norms(x - x0)
        is_b_upper = np.where(np.abs(dz0) > 1e-6, dz0 > 0, moved.take(b) > moved.take(a))
        lo = np.where(is_b_upper, a, b)
        hi = np.where(is_b_upper, b, a)
        delta = x.take(hi, axis=0) - x.take(lo, axis=0)  # (p, 3)
        planar = np.hypot(delta[:, 0], delta[:, 1])
        # Non-neighbours closer than 0.75 thickness sideways cannot share a layer (that would
        # take a 50% compression of the grid), so they are stacked even if level: pushed
        # apart sideways, a particle that slipped into a gap of the layer below is pushed
        # equally by the gap's four corners and stays there.
        stacked = ((z0.take(hi) - z0.take(lo)) > 0.25 * self.thickness) | (planar < 0.75 * self.thickness)
        horizontal = np.minimum(planar, self.thickness)
        needed_dz = np.sqrt(self.thickness**2 - horizontal**2)
        vertical = np.zeros_like(delta)
        vertical[:, 2] = np.maximum(needed_dz - delta[:, 2], 0.0)
        length = row_norms(delta) + 1e-12
        radial = ((self.thickness - length) / length)[:, None] * delta
        push = np.where(stacked[:, None], vertical, radial)  # total separation to add, (p, 3)
        is_lo_on_table = z.take(lo) <= self.table_offset + 1e-4
        inv_mass_lo = inv_mass.take(lo)
        w_lo = inv_mass_lo * ~is_lo_on_table  # the table holds a resting lower particle
        w_hi = inv_mass.take(hi)
        w = np.maximum(w_lo + w_hi, 1e-12)
        # A particle stacked on cloth that rests on the table must clear every such particle
        # below it, so it takes the largest of those lifts. Averaged with its other pushes (as
        # the remaining pairs are), the lift falls short, gravity wins the next substep, and a
        # folded layer sinks through the gaps of the grid below within a few substeps.
        is_on_resting = stacked & is_lo_on_table & (inv_mass_lo > 0)
        averaged = ~is_on_resting
        # Every particle's pushes summed in pair order, the upper ends' before the lower ends':
        # one weighted bincount over the flattened (particle, axis) slots adds them one by one
        # in the order np.add.at would, at a fraction of its cost.
        ends = np.concatenate([hi[averaged], lo[averaged]])  # (2q,)
        push_a, w_a = push[averaged], w[averaged]
        pushes = np.concatenate([push_a * (w_hi[averaged] / w_a)[:, None],
                                 -push_a * (w_lo[averaged] / w_a)[:, None]])  # (2q, 3)
        slots = (3 * ends[:, None] + np.arange(3)).ravel()
        acc = np.bincount(slots, weights=pushes.ravel(), minlength=3 * n).reshape(n, 3)
        count = np.bincount(ends, minlength=n)[:, None]
        x = x + acc / np.maximum(count, 1)
        if is_on_resting.any():
            lift = np.zeros(n)
            np.maximum.at(lift, hi[is_on_resting], vertical[is_on_resting, 2] * w_hi[is_on_resting])
            x[:, 2] += lift
        return x

    def _solve_obstacles(self, x: np.ndarray, inv_mass: np.ndarray, obstacles) -> np.ndarray:
        free = inv_mass > 0
        # A particle inside a box lies within |rotation| @ (half + table_offset) of its centre along
        # each world axis (1e-9 m of slack covers rounding). Most boxes are fingers in the air, whose
        # world-axis bounding box misses the cloth's: one test of all the boxes at once skips them.
        centers = np.array([center for center, _, _ in obstacles])  # (b, 3)
        reach = (np.abs(np.array([rotation for _, rotation, _ in obstacles]))
                 * (np.array([half for _, _, half in obstacles]) + self.table_offset)[:, None, :]).sum(-1) + 1e-9
        low, high = centers - reach, centers + reach  # (b, 3) each

        def misses_cloth() -> np.ndarray:  # (b,) bool: the box's bounding box misses the cloth's
            return ((x.max(axis=0) < low) | (x.min(axis=0) > high)).any(axis=1)

        is_missing = misses_cloth()
        for b, (center, rotation, half) in enumerate(obstacles):
            if is_missing[b]:
                continue
            local = (x - center) @ rotation  # (n, 3) in the box frame
            depth = half + self.table_offset - np.abs(local)  # (n, 3) penetration per axis
            inside = free & np.all(depth > 0, axis=1)
            if not inside.any():
                continue
            axis = np.argmin(depth[inside], axis=1)
            rows = np.nonzero(inside)[0]
            local[rows, axis] += np.sign(local[rows, axis] + 1e-12) * depth[inside][np.arange(len(rows)), axis]
            x[rows] = local[rows] @ rotation.T + center
            is_missing = misses_cloth()  # the pushed particles may now reach a later box
        return x

    def _solve_table(self, x: np.ndarray, x0: np.ndarray) -> np.ndarray:
        below = np.flatnonzero(x[:, 2] < self.table_offset)
        if len(below):
            touching = x.take(below, axis=0)  # (k, 3), written back below
            depth = self.table_offset - touching[:, 2]
            touching[:, 2] = self.table_offset
            # Position-based friction: touching particles keep only part of their sliding motion,
            # and none of it below `friction` x penetration depth (static friction, Macklin et
            # al. 2014, eq. 24). Without the static part a crumpled shirt left alone creeps
            # forever as its stretched edges relax a little every substep.
            start = x0.take(below, axis=0)[:, :2]
            slide = touching[:, :2] - start
            is_stuck = row_norms(slide) < self.friction * depth
            touching[:, :2] = start + np.where(is_stuck[:, None], 0.0, (1.0 - self.friction) * slide)
            x[below] = touching
        return x
