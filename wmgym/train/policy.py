"""Policies learned inside imagination: behaviour cloning, PPO in WMFold-v0, judge-filtered fine-tuning.

The policy is a stable-baselines3 `PPO("CnnPolicy")` acting on 64x64 frames with actions
normalised to [-1, 1] (`WMFoldVecEnv`'s action space). Behaviour cloning on single frames
did not fold in SimFold-v0; two options address it:

- **Binary gripper** (`binary_gripper`, default off): each hand's width output is thresholded into
  open (0.08 m) where its normalised value is > 0, else closed (0 m), in PPO's env
  (`WMFoldVecEnv(binary_gripper=True)`) and in evaluation, as robot-learning policies command
  parallel grippers, and behaviour cloning regresses the width onto +-1 (MSE, i.e. the Brier
  score: the output is 2 P(open) - 1). It did not help, so it is off.
- **Frame stacking** (`n_stack`, default 3): the policy sees its last `n_stack` frames on the
  channel axis (oldest first; zero frames before an episode's first, SB3's `VecFrameStack`
  convention), so it can tell descending from holding from lifting, which one frame from above
  does not show. The same stacks are built from each demonstration's consecutive frames
  (`load_demonstrations(n_stack=...)`), by `VecFrameStack` around the adapter for PPO, and by
  `SB3Policy(n_stack=...)` in evaluation and imagined rollouts.

Three stages, each optional:

1. **Behaviour cloning** on the demonstrations of one task in a `wmgym generate` store (the
   successful episodes of `demo_kinds`, train split; "perturbed" episodes add states off the
   demonstrator's path with its corrective actions): the policy's action mean is regressed onto
   the normalised demonstrated actions (MSE), its exploration noise is left at `log_std_init`.
2. **PPO inside WMFold-v0**: `PPO.learn` on the batched SB3 adapter (frame-stacked); rewards and
   episode ends come from the world model's reward head and success judge, never from the simulator.
   PPO fine-tunes the cloned policy the way fine-tuning from demonstrations is usually done:
   the critic has its own CNN (`share_features_extractor=False`, so value regression cannot
   rewrite the cloned features), it is warmed up first with the actor frozen
   (`critic_warmup_timesteps`, `warm_up_critic`), and the learning rate is a tenth of SB3's
   (`ppo_learning_rate` 3e-5); the success judge's "done" earns `success_bonus` on top of the
   reward head's potential differences, and exploration noise is small (`log_std_init` -2.5).
   The separate, warmed-up critic and the lower learning rate keep PPO from unlearning what
   behaviour cloning taught, and the small exploration noise keeps its rollouts from missing
   most grasps; what the recipe reaches today is in docs/results.md, "PPO trained only in
   imagination".
3. **Judge-filtered fine-tuning** (the seeds' policy-improvement loop): roll the stochastic
   policy out in WMFold-v0 from the bundle's start frames, keep the episodes the success judge
   accepts, and behaviour-clone on them together with the demonstrations.

`evaluate_in_simulator` then runs the policy in SimFold-v0 (never seen during training).
On a GPU every stage keeps frames on the device (`WMFoldVecEnv` hands SB3 NumPy, the SB3
convention; `WorldModelVectorEnv(return_torch=True)` is the tensor path for custom loops).

What is left: the cloned policy closes at the step it reaches the cloth, just above the table,
instead of the step after, so most grasps miss.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wmgym.actions import WIDTH_DIMS
from wmgym.outputs import OutputKind, check_output
from wmgym.train.checkpoint import run_lock, write_text_atomic

POLICY_RUN = OutputKind("policy run", ("*.zip",))  # what --overwrite may replace: a directory of SB3 models


@dataclass
class TrainPolicyConfig:
    """Train a frame-to-action policy for one task: behaviour cloning, then PPO and/or judge-filtered fine-tuning inside WMFold-v0; evaluated in SimFold-v0."""

    out: str
    """Output directory: bc.zip, ppo.zip, filtered.zip (SB3 models), metrics.json. An existing policy run
    there is replaced only with --overwrite; a non-empty directory of anything else is refused."""
    overwrite: bool = False
    """Replace the policy run at --out (its SB3 models and metrics)."""
    data: str | None = None
    """A `wmgym generate` store with demonstrations (None: no behaviour cloning, PPO from scratch)."""
    task: str = "fold_half"
    """Task to learn (one of wmgym.sim.tasks.TASKS)."""
    checkpoint: str = "default"
    """WMFold-v0 bundle."""
    reward: str = "videoclip"
    """WMFold-v0 reward for PPO: videoclip, lpips, lpips-offline, lpips-calibrated."""
    bc_epochs: int = 4
    """Passes over the demonstrations."""
    bc_batch_size: int = 128
    learning_rate: float = 3e-4
    """Adam learning rate of behaviour cloning and of judge-filtered fine-tuning."""
    ppo_learning_rate: float = 3e-5
    """Adam learning rate of PPO (a tenth of SB3's default: PPO fine-tunes a cloned policy)."""
    success_bonus: float = 1.0
    """Reward added at the step the success judge ends an episode (PPO's env; 0: the reward
    head's potential differences alone, which do not say when the fold is done)."""
    critic_warmup_timesteps: int = 2048
    """Imagined env steps of PPO with the actor frozen before the PPO steps, so the value
    function (its own CNN) has learnt the returns before its advantages move the actor."""
    log_std_init: float = -2.5
    """Initial log standard deviation of the policy's Gaussian (normalised action units): e^-2.5 =
    0.08, about 1 cm of position noise a step, the planner's proposal noise (-1.5, 2.7 cm, made
    PPO's rollouts miss most grasps, and PPO lost much of the cloned policy's success)."""
    binary_gripper: bool = False
    """Binary gripper: each width output is thresholded into open (0.08 m, normalised > 0) or closed (0 m),
    in PPO's env and in evaluation, and behaviour cloning regresses it onto +-1 (open / closed)."""
    n_stack: int = 3
    """Frames the policy sees: the last n_stack frames on the channel axis (SB3's VecFrameStack; 1: single frames)."""
    demo_kinds: tuple[str, ...] = ("demo", "perturbed")
    """Episode kinds whose successful episodes of the task are behaviour-cloned (demo, perturbed, random)."""
    ppo_timesteps: int = 0
    """Imagined env steps of PPO (0: skip)."""
    num_envs: int = 16
    """Batched imagined envs for PPO and for filtered rollouts."""
    n_steps: int = 32
    """PPO rollout length per env."""
    filtered_rounds: int = 0
    """Rounds of judge-filtered fine-tuning (0: skip)."""
    filtered_episodes: int = 64
    """Imagined episodes per round."""
    eval_episodes: int = 30
    """SimFold-v0 episodes of the final evaluation (0: skip)."""
    num_steps: int | None = None
    """Sampler steps of the world model (None: the bundle's default)."""
    judge_threshold: float | None = None
    """Success-judge threshold in WMFold-v0 (None: the bundle's calibrated one)."""
    seed: int = 0
    device: str = "auto"


# ---------------------------------------------------------------- data
def load_demonstrations(path, task: str, split: str = "train", kinds=("demo",), only_success: bool = True,
                        n_stack: int = 1):
    """(frame, action) pairs of one task's episodes in a `wmgym generate` store.

    Returns frames uint8 (n, H, W, 3 * n_stack) (each the frame an action was taken in, after
    the n_stack - 1 frames before it in its episode as `stack_frames` stacks them) and actions
    float32 (n, 20), from the episodes of `split` (the world model's split) whose kind is in
    `kinds` and, with `only_success`, that succeeded.
    """
    from wmgym.data.dataset import split_episodes
    from wmgym.data.store import EpisodeStore
    from wmgym.data.store_layout import CAMERA_KEY
    from wmgym.sim.episode import EPISODE_KINDS

    store = EpisodeStore.open(path)
    if task not in store.tasks:
        raise ValueError(f"task {task!r} is not in {path} (it has {', '.join(store.tasks)})")
    every = np.arange(store.num_episodes)
    chosen = np.zeros(store.num_episodes, dtype=bool)
    chosen[split_episodes(store.num_episodes, split)] = True
    chosen &= store.read_meta("episode_task_id", every) == store.tasks.index(task)
    chosen &= np.isin(store.read_meta("episode_kind", every), [EPISODE_KINDS.index(k) for k in kinds])
    if only_success:
        chosen &= store.read_meta("episode_success", every).astype(bool)
    if not chosen.any():
        raise ValueError(f"no {'/'.join(kinds)} episodes of {task} in the {split} split of {path}")
    ends = store.episode_ends
    starts = np.concatenate([[0], ends[:-1]])
    keep = np.zeros(int(ends[-1]), dtype=bool)
    for i in np.flatnonzero(chosen):
        keep[starts[i] : ends[i] - 1] = True  # every frame but the last has an action
    rows = store.read_rows(keep, [CAMERA_KEY, "action"])
    frames, actions = rows[CAMERA_KEY], rows["action"].astype(np.float32)
    if n_stack > 1:
        frames = stack_frames(frames, (ends - starts - 1)[chosen], n_stack)
    return frames, actions


def stack_frames(frames: np.ndarray, lengths, n_stack: int) -> np.ndarray:
    """Consecutive episodes' frames (n, H, W, C), `lengths` frames each in order (sum n) ->
    (n, H, W, n_stack * C): row t holds frames t - n_stack + 1 .. t of its episode, oldest first,
    zeros before the episode's first frame (as SB3's VecFrameStack stacks a live episode)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if n_stack < 1 or lengths.sum() != len(frames):
        raise ValueError(f"need n_stack >= 1 and episode lengths summing to {len(frames)} frames, got {n_stack}, {lengths.sum()}")
    step = np.arange(len(frames)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # step within the episode
    channels = frames.shape[-1]
    out = np.zeros((*frames.shape[:-1], n_stack * channels), frames.dtype)
    for block in range(n_stack):  # block n_stack - 1 is the current frame
        lag = n_stack - 1 - block
        rows = np.flatnonzero(step >= lag)
        out[rows, ..., block * channels : (block + 1) * channels] = frames[rows - lag]
    return out


# ---------------------------------------------------------------- stages
def make_ppo(venv, config: TrainPolicyConfig):
    """A PPO CnnPolicy on `venv` with the configured exploration noise and learning rate.

    The actor and the critic have separate CNNs (`share_features_extractor=False`): with a
    shared one, the value loss of a freshly initialised critic rewrites the features behaviour
    cloning trained, and PPO fine-tuning lost all of the cloned policy's success in SimFold-v0."""
    from stable_baselines3 import PPO

    return PPO("CnnPolicy", venv, n_steps=config.n_steps, batch_size=min(256, config.n_steps * venv.num_envs),
               learning_rate=config.ppo_learning_rate, seed=config.seed, device=_sb3_device(config.device), verbose=0,
               policy_kwargs={"log_std_init": config.log_std_init, "share_features_extractor": False})


def with_success_bonus(venv, bonus: float):
    """`venv` (an SB3 VecEnv whose infos carry "success", e.g. `WMFoldVecEnv`) with `bonus` added
    to the reward of every step whose info says the success judge ended the episode."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class SuccessBonus(VecEnvWrapper):
        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            observations, rewards, dones, infos = self.venv.step_wait()
            success = np.array([bool(info.get("success", False)) for info in infos])
            return observations, rewards + np.float32(bonus) * success, dones, infos

    return SuccessBonus(venv) if bonus else venv


ACTOR_PREFIXES = ("features_extractor", "pi_features_extractor", "mlp_extractor.policy_net", "action_net", "log_std")
"""Parameter name prefixes of an SB3 ActorCriticPolicy's actor (the rest is the critic)."""


def actor_parameters(policy) -> list:
    """The actor's parameters of an SB3 ActorCriticPolicy (shared feature extractor included)."""
    return [p for name, p in policy.named_parameters() if name.startswith(ACTOR_PREFIXES)]


def warm_up_critic(model, timesteps: int) -> None:
    """`model.learn(timesteps)` with the actor frozen: only the value function trains (PPO's
    optimizer skips parameters without gradients), so PPO's first actor updates use advantages
    from a critic that has seen the task's returns rather than from a random one."""
    if timesteps < 1:
        return
    actor = actor_parameters(model.policy)
    for p in actor:
        p.requires_grad_(False)
    try:
        model.learn(total_timesteps=timesteps, progress_bar=False, reset_num_timesteps=True)
    finally:
        for p in actor:
            p.requires_grad_(True)


def behaviour_clone(model, frames: np.ndarray, actions: np.ndarray, epochs: int, batch_size: int = 128,
                    learning_rate: float = 3e-4, seed: int = 0, binary_gripper: bool = False) -> list[float]:
    """Regress `model.policy`'s action mean onto demonstrated actions (MSE in [-1, 1] units).

    frames uint8 (n, H, W, C) (C = 3 * frames stacked), actions float32 (n, 20) in env units.
    With `binary_gripper` the width targets are +1 (open: > half the width range) or -1 (closed):
    MSE toward +-1 is the Brier score, so the regressed width is 2 P(open) - 1 and the binary
    gripper's threshold at 0 picks the likelier command; the mean stays within +-1, so PPO's
    exploration noise can still flip the jaws. Trains the feature extractor and the action head
    (not the value head or log_std); returns the mean loss per epoch.
    """
    import torch

    from wmgym.envs.sb3 import to_normalized_actions

    policy = model.policy
    targets = to_normalized_actions(actions)
    if binary_gripper:
        widths = list(WIDTH_DIMS)
        targets[:, widths] = np.where(targets[:, widths] > 0.0, 1.0, -1.0)
    targets = torch.from_numpy(targets).to(policy.device)
    images = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))  # SB3 wants channels first
    params = [p for name, p in policy.named_parameters() if name.startswith(ACTOR_PREFIXES) and name != "log_std"]
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    policy.set_training_mode(True)
    losses = []
    for _ in tqdm(range(epochs), desc="behaviour cloning", leave=False):
        order, total = torch.randperm(len(images), generator=generator), 0.0
        for first in range(0, len(order), batch_size):
            index = order[first : first + batch_size]
            obs = images[index].to(policy.device).float()  # 0..255: the policy's preprocessing scales image boxes
            mean = policy.get_distribution(obs).distribution.mean
            loss = torch.nn.functional.mse_loss(mean, targets[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        losses.append(total / len(images))
    policy.set_training_mode(False)
    return losses


def imagined_successes(model, config: TrainPolicyConfig, episodes: int, seed: int):
    """Roll the stochastic policy out in WMFold-v0 from the bundle's start frames; return the
    (frame, action) pairs of the episodes the success judge accepted (uint8 (n, H, W, 3),
    float32 (n, 20)) and the acceptance rate."""
    from wmgym.envs.imagined import ImaginedEpisodes
    from wmgym.envs.sb3 import from_normalized_actions
    from wmgym.policies.base import SB3Policy

    stacker = SB3Policy(model, n_stack=config.n_stack)  # stacks frames as VecFrameStack does
    core = ImaginedEpisodes(config.num_envs, checkpoint=config.checkpoint, task=config.task, reward="none",
                            num_steps=config.num_steps, max_episode_steps=16, device=config.device,
                            judge_threshold=config.judge_threshold)
    core.generator.manual_seed(seed)
    rng = np.random.default_rng(seed)
    kept_frames, kept_actions, accepted, total = [], [], 0, 0
    for _ in range(max(1, episodes // config.num_envs)):
        obs = core.reset_rows(range(config.num_envs), rng).cpu().numpy()
        frames, actions = [], []
        done = np.zeros(config.num_envs, dtype=bool)
        for t in range(16):
            obs = stacker.stacked(obs, t)
            action = from_normalized_actions(model.predict(obs, deterministic=False)[0], config.binary_gripper)
            frames.append(obs)
            actions.append(action)
            obs, _, fired, _ = core.step(action, active=~done)
            obs = obs.cpu().numpy()
            done |= fired
        frames, actions = np.stack(frames, 1), np.stack(actions, 1)  # (b, 16, ...)
        for row in np.flatnonzero(done):
            steps = int(core.lengths[row]) - 1  # the actions up to the accepted frame
            kept_frames.append(frames[row, :steps])
            kept_actions.append(actions[row, :steps])
        accepted, total = accepted + int(done.sum()), total + config.num_envs
    if not kept_frames:
        return np.zeros((0, *obs.shape[1:]), np.uint8), np.zeros((0, 20), np.float32), 0.0
    return np.concatenate(kept_frames), np.concatenate(kept_actions), accepted / total


def evaluate_in_simulator(model, task: str, episodes: int, seed: int = 10_000, deterministic: bool = True,
                          binary_gripper: bool = False) -> dict:
    """Success rate and mean final score of an SB3 model (normalised actions; frame-stacked or not) in SimFold-v0.

    `binary_gripper`: threshold its widths as `WMFoldVecEnv(binary_gripper=True)` does. A `Policy`
    (`wmgym.policies.base`) instead of an SB3 model is run as it is (e.g. the random baseline)."""
    from wmgym.eval.policies import make_starts, run_in_simulator
    from wmgym.policies.base import Policy, SB3Policy, Start

    starts = [Start(task, s.seed) for s in make_starts(episodes, seed)]  # held-out start states, one task
    policy = model if isinstance(model, Policy) else SB3Policy.for_adapter(model, binary_gripper, deterministic)
    result = run_in_simulator(policy, starts)
    return {"success_rate": float(result["success"].mean()), "mean_score": float(result["score"].mean()), "episodes": episodes}


def train_policy(config: TrainPolicyConfig) -> dict:
    """Run the configured stages; saves each stage's model and returns (and writes) metrics.
    Holds the writer lock of `config.out` throughout, so a second run on it refuses."""
    from wmgym.sim.tasks import TASKS

    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; expected one of {', '.join(TASKS)}")
    if config.data is None and config.ppo_timesteps == 0 and config.filtered_rounds == 0:
        raise ValueError("nothing to train: give --data (behaviour cloning), --ppo-timesteps or --filtered-rounds")
    if config.n_stack < 1:
        raise ValueError(f"n_stack must be >= 1, got {config.n_stack}")
    if config.critic_warmup_timesteps < 0 or config.ppo_learning_rate <= 0:
        raise ValueError(f"need critic_warmup_timesteps >= 0 and ppo_learning_rate > 0, got "
                         f"{config.critic_warmup_timesteps} and {config.ppo_learning_rate}")
    with run_lock(config.out):  # one run at a time writes `out` (issue 36)
        check_output(config.out, POLICY_RUN, config.overwrite)  # before the work, not after it
        return _train_locked(config)


def _train_locked(config: TrainPolicyConfig) -> dict:
    from stable_baselines3.common.vec_env import VecFrameStack

    from wmgym.envs.sb3 import WMFoldVecEnv

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"config": asdict(config)}
    began = time.perf_counter()
    venv = WMFoldVecEnv(config.num_envs, checkpoint=config.checkpoint, task=config.task, reward=config.reward,
                        num_steps=config.num_steps, device=config.device, judge_threshold=config.judge_threshold,
                        binary_gripper=config.binary_gripper)
    venv.seed(config.seed)
    venv = with_success_bonus(venv, config.success_bonus)
    if config.n_stack > 1:
        venv = VecFrameStack(venv, config.n_stack, channels_order="last")
    model = make_ppo(venv, config)
    demo_frames = demo_actions = None
    if config.data is not None:
        bc_began = time.perf_counter()
        demo_frames, demo_actions = load_demonstrations(config.data, config.task, kinds=config.demo_kinds, n_stack=config.n_stack)
        losses = behaviour_clone(model, demo_frames, demo_actions, config.bc_epochs, config.bc_batch_size, config.learning_rate,
                                 config.seed, config.binary_gripper)
        metrics["bc"] = {"pairs": len(demo_frames), "loss_by_epoch": losses, "wall_time_s": time.perf_counter() - bc_began}
        model.save(out / "bc.zip")
        metrics["bc"].update(_evaluate(model, config))
    if config.ppo_timesteps > 0:
        warm_up_critic(model, config.critic_warmup_timesteps)
        model.learn(total_timesteps=config.ppo_timesteps, progress_bar=False, reset_num_timesteps=False)
        model.save(out / "ppo.zip")
        metrics["ppo"] = {"timesteps": int(model.num_timesteps), "critic_warmup_timesteps": config.critic_warmup_timesteps,
                          **_evaluate(model, config)}
    for round_ in range(config.filtered_rounds):
        frames, actions, rate = imagined_successes(model, config, config.filtered_episodes, config.seed + 1 + round_)
        entry = {"round": round_, "accepted_rate": rate, "pairs": len(frames)}
        if len(frames):
            if demo_frames is not None:
                frames, actions = np.concatenate([demo_frames, frames]), np.concatenate([demo_actions, actions])
            entry["loss_by_epoch"] = behaviour_clone(model, frames, actions, config.bc_epochs, config.bc_batch_size,
                                                     config.learning_rate, config.seed + 1 + round_, config.binary_gripper)
        model.save(out / "filtered.zip")
        metrics.setdefault("filtered", []).append({**entry, **_evaluate(model, config)})
    if config.eval_episodes > 0:  # the bar to beat, on the same start states
        from wmgym.policies.base import SimulatorBehaviourPolicy

        metrics["random"] = {"sim": evaluate_in_simulator(SimulatorBehaviourPolicy("random"), config.task, config.eval_episodes)}
    metrics["wall_time_s"] = time.perf_counter() - began
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    venv.close()
    return metrics


def _evaluate(model, config: TrainPolicyConfig) -> dict:
    if config.eval_episodes < 1:
        return {}
    return {"sim": evaluate_in_simulator(model, config.task, config.eval_episodes, binary_gripper=config.binary_gripper)}


def _sb3_device(device: str) -> str:
    return "auto" if device == "auto" else device
