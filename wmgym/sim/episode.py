"""One simulated episode: what to run (`EpisodeSpec`) and what came out (`EpisodeRecord`).

`run_episode(spec)` is the single entry point dataset generation calls; it is a pure
function of the spec (same spec, same record, bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

EPISODE_KINDS = ("demo", "perturbed", "random", "replay", "proposal", "uniform")  # append only: stores keep kinds as indices


@dataclass(frozen=True)
class EpisodeSpec:
    """What to simulate.

    Attributes:
        task: task name, one of `wmgym.sim.tasks.TASKS`.
        seed: seeds the cloth's start state, colours and the action noise.
        kind: "demo" (scripted demonstrator with `noise`), "perturbed" (demonstrator whose
            actions get large random perturbations on some steps), "random" (smooth random
            actions) or "replay" (the demonstrator's actions for another start state of the
            same task, replayed open loop: clean, purposeful motion whose grasps mostly miss) or
            "proposal" (the clean demonstrator's actions at speed 1 for this start state, as
            `wmgym plan` takes them for its nominal sequence, plus Gaussian noise of std `noise`
            on every position delta and width, clipped to the action bounds, executed open loop:
            the planner's own proposals, about a third of which succeed) or "uniform" (every
            action drawn uniformly over the action box, as `env.action_space.sample()` draws
            it: random rotations, jumps of up to 12 cm per axis, random jaw widths; what an RL
            user's first exploration looks like).
        noise: demonstrator noise level (0 = clean), used by "demo", "perturbed" and "replay";
            for "proposal" the std (metres) of the action noise.
        height, width: image size in pixels.
        horizon: number of actions T; the episode has T + 1 frames.
    """

    task: str
    seed: int
    kind: str = "demo"
    noise: float = 0.0
    height: int = 64
    width: int = 64
    horizon: int = 16


@dataclass
class EpisodeRecord:
    """A finished episode; robot0 is the left gripper, robot1 the right one.

    Attributes (T actions, T + 1 frames):
        spec: the spec that produced it.
        task_id: index of `spec.task` in `wmgym.sim.tasks.TASKS`.
        camera: (T+1, H, W, 3) uint8, the camera view.
        static_scene: (T+1, H, W, 3) uint8, the start state without grippers, same camera.
        grippers: (T+1, H, W, 3) uint8, the grippers alone on black, same camera.
        eef_pos: (T+1, 2, 3) float32, gripper tool-centre positions in the world frame (metres).
        eef_rot_axis_angle: (T+1, 2, 3) float32, gripper orientations as axis-angle.
        gripper_width: (T+1, 2) float32, opening widths (metres).
        actions: (T, 20) float32, in the layout of `wmgym.actions`.
        score: (T+1,) float32, the task's ground-truth score after each frame.
        success: whether the score reached the task's success threshold.
        caption: English description of what actually happened.
        goal_caption: the task instruction.
        goal_image: (H, W, 3) uint8, the goal configuration rendered from the start camera.
        held_particles: (T+1, 2) int16, how many cloth particles the left and right gripper hold
            at each frame (0: nothing; the simulator's grasp, which the camera shows only as
            whether the cloth follows); None in records made before it was recorded.
    """

    spec: EpisodeSpec
    task_id: int
    camera: np.ndarray
    static_scene: np.ndarray
    grippers: np.ndarray
    eef_pos: np.ndarray
    eef_rot_axis_angle: np.ndarray
    gripper_width: np.ndarray
    actions: np.ndarray
    score: np.ndarray
    success: bool
    caption: str
    goal_caption: str
    goal_image: np.ndarray
    held_particles: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.camera.shape[0])


@lru_cache(maxsize=4)
def _world(height: int, width: int):
    from wmgym.sim.world import FoldWorld, WorldConfig

    return FoldWorld(WorldConfig(height=height, width=width))


def run_episode(spec: EpisodeSpec) -> EpisodeRecord:
    """Simulate one episode; a pure function of `spec` (same spec, same record, bit for bit).

    "demo" runs the scripted expert with `spec.noise` on its key poses and grasp point and a
    random speed; "perturbed" runs it with `spec.noise` and adds large random jolts to about
    a third of its actions (and sometimes opens or closes a jaw at the wrong time); "random"
    runs `RandomBehaviour`. Frames are recorded before each action and once after the last.
    """
    from wmgym.actions import MAX_POSITION_DELTA, matrix_to_axis_angle
    from wmgym.sim.demonstrator import DemoParams, RandomBehaviour, ScriptedDemonstrator, UniformBehaviour
    from wmgym.sim.gripper import GRASP_WIDTH
    from wmgym.sim.tasks import TASKS, describe_outcome, make_task
    from wmgym.sim.world import OPEN_WIDTH

    if spec.kind not in EPISODE_KINDS:
        raise ValueError(f"unknown episode kind {spec.kind!r}; expected one of {EPISODE_KINDS}")
    if spec.horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {spec.horizon}")
    if spec.kind == "replay":  # before the reset below: _demo_actions runs on the same cached world
        reference_seed = int(np.random.SeedSequence(spec.seed, spawn_key=(1,)).generate_state(1, np.uint32)[0])
        replayed = iter(_demo_actions(spec.task, reference_seed, spec.noise, spec.height, spec.width, spec.horizon))
    elif spec.kind == "proposal":
        replayed = iter(_proposal_actions(spec))
    world = _world(spec.height, spec.width)
    rng = np.random.default_rng(spec.seed)
    world.reset(rng, spec.task)
    if spec.kind == "random":
        policy = RandomBehaviour(world, rng, spec.horizon)
    elif spec.kind == "uniform":
        policy = UniformBehaviour(rng)
    elif spec.kind in ("replay", "proposal"):
        policy = None
    else:
        params = DemoParams(noise=spec.noise, speed=float(rng.uniform(0.85, 1.3)), grasp_offset=spec.noise)
        policy = ScriptedDemonstrator(world, rng, params, spec.horizon)
    views, poses, widths, scores, actions, held = [], [], [], [], [], []
    success = False
    for t in range(spec.horizon + 1):
        views.append(world.views())
        poses.append(world.poses.copy())
        widths.append(world.widths.copy())
        held.append([0 if h is None else len(h[0]) for h in world.held])
        scores.append(world.score())
        success = success or world.is_success()
        if t == spec.horizon:
            break
        action = next(replayed).copy() if policy is None else policy.action()
        if spec.kind == "perturbed" and rng.uniform() < 0.35:
            for hand in range(2):
                action[10 * hand : 10 * hand + 3] += rng.normal(0.0, 0.04, size=3).astype(np.float32)
                if rng.uniform() < 0.2:
                    action[10 * hand + 9] = 0.0 if action[10 * hand + 9] >= GRASP_WIDTH else OPEN_WIDTH
            action = np.clip(action, -MAX_POSITION_DELTA, MAX_POSITION_DELTA, where=np.tile(np.arange(10) < 3, 2), out=action)
        world.step(action)
        actions.append(action)
    poses = np.array(poses)  # (T+1, 2, 4, 4)
    thresholds = {name: make_task(name).success_threshold for name in TASKS}
    displacement = float(np.mean(np.linalg.norm(world.positions - world.start, axis=1)))
    caption = describe_outcome(world.scores_for_all_tasks(), thresholds, tuple(world.ever_grasped), displacement)
    return EpisodeRecord(
        spec=spec,
        task_id=TASKS.index(spec.task),
        camera=np.stack([v[0] for v in views]),
        static_scene=np.stack([v[1] for v in views]),
        grippers=np.stack([v[2] for v in views]),
        eef_pos=poses[:, :, :3, 3].astype(np.float32),
        eef_rot_axis_angle=matrix_to_axis_angle(poses[:, :, :3, :3]).astype(np.float32),
        gripper_width=np.array(widths, dtype=np.float32),
        actions=np.array(actions, dtype=np.float32),
        score=np.array(scores, dtype=np.float32),
        success=bool(success),
        caption=caption,
        goal_caption=world.task.caption,
        goal_image=world.render_goal(),
        held_particles=np.array(held, dtype=np.int16),
    )


def _demo_actions(task: str, seed: int, noise: float, height: int, width: int, horizon: int,
                  speed: float | None = None) -> np.ndarray:
    """The actions (T, 20) of `run_episode(EpisodeSpec(task, seed, "demo", noise, height, width, horizon))`,
    without rendering a frame (with `speed` given, the demonstrator runs at that speed instead
    of the episode's random one).

    A "replay" episode plays them from its own start state: the demonstrator's motion for a
    cloth that lies elsewhere, which the world model must learn does not fold this one.
    """
    from wmgym.sim.demonstrator import DemoParams, ScriptedDemonstrator

    world = _world(height, width)
    rng = np.random.default_rng(seed)
    world.reset(rng, task)
    drawn_speed = float(rng.uniform(0.85, 1.3))  # drawn either way, so the noise below stays the same
    policy = ScriptedDemonstrator(world, rng, DemoParams(noise=noise, speed=drawn_speed if speed is None else speed,
                                                         grasp_offset=noise), horizon)
    actions = []
    for _ in range(horizon):
        actions.append(policy.action())
        world.step(actions[-1])
    return np.array(actions, dtype=np.float32)


def _proposal_actions(spec: EpisodeSpec) -> np.ndarray:
    """A "proposal" episode's actions (T, 20): the clean demonstrator's sequence at speed 1 (what
    `wmgym plan` centres its proposals on) plus N(0, spec.noise) on the positions and widths,
    clipped to the action bounds as `wmgym.policies.planning.sample_gaussian` clips them."""
    from wmgym.actions import FREE_DIMS, clip_to_bounds

    actions = _demo_actions(spec.task, spec.seed, 0.0, spec.height, spec.width, spec.horizon, speed=1.0)
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(2,)))
    actions[:, FREE_DIMS] += (spec.noise * rng.standard_normal((len(actions), len(FREE_DIMS)))).astype(np.float32)
    return clip_to_bounds(actions)


def replay_actions(spec: EpisodeSpec, actions) -> np.ndarray:
    """The camera frames of `spec`'s start state driven by other `actions`.

    The start state (cloth, colours, camera) is drawn exactly as `run_episode(spec)` draws it;
    then `actions` (T, 20) float32 replace the spec's policy, so replaying an episode's own
    actions reproduces its frames, and another episode's actions give the action cross-swap's
    ground truth. Returns uint8 (T + 1, H, W, 3), the start frame first.
    """
    from wmgym.actions import validate_action

    actions = validate_action(actions)
    if actions.ndim != 2 or actions.shape[1] != 20:
        raise ValueError(f"actions must be (T, 20), got {actions.shape}")
    world = _world(spec.height, spec.width)
    world.reset(np.random.default_rng(spec.seed), spec.task)
    frames = [world.views()[0]]
    for action in actions:
        world.step(action)
        frames.append(world.views()[0])
    return np.stack(frames)


def simulate_episodes(specs, show_progress: bool = False, desc: str = "simulate") -> tuple[np.ndarray, np.ndarray]:
    """Run `EpisodeSpec`s in the simulator -> frames uint8 (n, T+1, H, W, 3), actions float32 (n, T, 20).

    All specs must share the frame size and horizon. Held-out episodes: e.g.
    `plan_episodes(n, seed, TASKS, 64, 64, 16)` with a master seed other than the training data's.
    """
    from tqdm.auto import tqdm

    specs = list(specs)
    if not specs:
        raise ValueError("need at least one episode spec")
    if len({(s.height, s.width, s.horizon) for s in specs}) != 1:
        raise ValueError("all specs must share height, width and horizon")
    records = [run_episode(spec) for spec in tqdm(specs, desc=desc, disable=not show_progress)]
    return np.stack([r.camera for r in records]), np.stack([r.actions for r in records]).astype(np.float32)


def start_gripper_state(spec: EpisodeSpec):
    """The grippers (`GripperState`) at the first frame of `run_episode(spec)`, exactly.

    The start state is drawn as `run_episode` draws it; with the episode's actions,
    `wmgym.sim.gripper_track.gripper_views` then reproduces its grippers view bit for bit.
    """
    from wmgym.sim.gripper_track import GripperState

    world = _world(spec.height, spec.width)
    world.reset(np.random.default_rng(spec.seed), spec.task)
    return GripperState.of_world(world)
