"""The arguments of `wmgym plan`, apart from the planner (`wmgym.policies.mpc`): the CLI reads
them, for `--help` too, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PlanConfig:
    """Plan actions in the world model, execute them in SimFold-v0, and compare the success rate with two baselines.

    Candidates (best-of-n or CEM) are imagined and scored by a reward head; the chosen plan runs
    in the simulator. The baselines, on the same start states: the scripted demonstrator and one
    unselected random proposal, with a permutation test of whether selecting helps."""

    task: str = "all"
    """Task (one of wmgym.sim.tasks.TASKS), or 'all'."""
    n: int = 64
    """Candidates per planning iteration (all rolled out in one batched call)."""
    episodes: int = 10
    """Episodes per task (seeds seed .. seed+episodes-1)."""
    method: str = "best-of-n"
    """'best-of-n' or 'cem'."""
    iterations: int = 3
    """CEM iterations (best-of-n does one)."""
    elites: int = 8
    """CEM elite set size."""
    reward: str = "lpips"
    """Scorer: 'lpips' (needs torchvision's ImageNet AlexNet file), 'lpips-offline' (a seeded
    random trunk when that file is missing: uncalibrated), 'lpips-calibrated' (the bundle's LPIPS
    trained on the simulator's fold score, `wmgym train-lpips`), 'videoclip' or 'judge'."""
    proposal: str = "gaussian"
    """'gaussian' around the nominal or 'uniform' within the action bounds."""
    nominal: str = "scripted"
    """'scripted' (the demonstrator's next actions from the current simulator state) or 'none'."""
    position_std: float = 0.01
    """Proposal noise on position deltas (metres)."""
    width_std: float = 0.01
    """Proposal noise on gripper widths (metres)."""
    include_mean: bool = False
    """Make candidate 0 the unperturbed nominal/mean."""
    held_mode: str = "prior"
    """Held-conditioned world model only: 'prior' (imagine each candidate with the grasp prior's
    probability of each closing catching) or 'expectation' (imagine it with every closing held
    and with none, 2n clips in one call, and score the prior-weighted mean; `Planner`)."""
    random_proposals: int = 1
    """Random proposals executed per start state, each an independent draw (draw 0 is the one
    earlier versions drew, so a finished run can be resumed with more). More draws estimate
    one random proposal's success rate at each start state with less noise, which sharpens
    `selection_test`; each costs one simulated episode and no world-model call."""
    replan_every: int | None = None
    """MPC: replan after every k executed steps (None: plan once, open loop)."""
    plan_horizon: int = 12
    """Steps per plan."""
    horizon: int = 16
    """Simulator episode length (truncation)."""
    context_frames: int = 1
    """Newest simulator frames the world model starts from."""
    num_steps: int = 2
    """Denoising steps per imagined frame."""
    checkpoint: str | None = None
    """Bundle directory (default: the shipped WMFold-v0 bundle)."""
    resolution: int | None = None
    """Simulator resolution (default: the bundle's)."""
    device: str = "auto"
    """'auto' (CUDA when available) or a torch device."""
    seed: int = 0
    """First episode seed; planner randomness is seeded from (seed, episode)."""
    num_threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    out: str | None = None
    """JSON file for per-episode records and the summary; finished episodes are reused on rerun."""
