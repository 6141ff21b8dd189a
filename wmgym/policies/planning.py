"""Planning in imagination: best-of-N and CEM over action sequences, scored by reward heads.

Dimension legend: n candidates, T planned steps, c context frames, t0 frames seen so far,
H x W pixels, 20 the action (wmgym.actions).

One iteration samples n action sequences (n, T, 20), rolls ALL of them out from the same
context in one batched `world_model.rollout` call, and scores the imagined clips with a
reward head (`RewardHead.score`, higher is better). Best-of-N is one iteration that keeps the
best candidate. CEM (the cross-entropy method as PlaNet, Hafner et al. 2019, plans with it)
repeats: refit a diagonal Gaussian to the `num_elites` best candidates, sample again from it;
it returns the best candidate seen in any iteration.

Grippers conditioning. A world model conditioned on the grippers view
(`world_model.config.condition_views == ("grippers",)`) needs that view for every context
frame and every imagined frame. `Planner.plan` then takes `grippers`: the `GripperState` at the
newest context frame (or one per context frame); each candidate's views and poses are rendered
from it by `wmgym.conditioning.candidate_conditions` (pure kinematics of the candidate's
actions, as the simulator draws them, static camera at the context's resolution).

Proposals. Gaussian around a nominal sequence (the scripted demonstrator's, an IDM's or a
policy's), or uniform within the action bounds. Only the position deltas (0:3, 10:13) and
the widths (9, 19) are sampled; the 6-D rotations are copied from the nominal (the identity
rotation when there is none), so every candidate holds a valid rotation. Sampled positions
and widths are clipped to `ACTION_LOW`/`ACTION_HIGH` (the simulator rejects actions outside).

Grasp state. A held-conditioned world model (`train-wm --held-conditioning`) also takes, per
frame and hand, whether the gripper holds cloth, drawn from its grasp prior. `held_mode="prior"`
gives it the prior's probability of each closing catching (one rollout per candidate);
`held_mode="expectation"` imagines every candidate twice in the same batched call, once with
every closing held and once with none (the 0/1 states the model was trained on), and scores
p_all * score(held) + (1 - p_all) * score(missed), p_all the prior's probability that all of
the candidate's closings catch (`GraspPrior.held_cases`; both through
`wmgym.conditioning.grasp_states`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wmgym.actions import (ACTION_DIM, ACTION_HIGH, ACTION_LAYOUT, ACTION_LOW, FREE_DIMS, IDENTITY_HAND_ROT6D, POSITION_DIMS,
                           WIDTH_DIMS, clip_to_bounds, validate_action)
from wmgym.conditioning import candidate_conditions, needs_grippers
from wmgym.model.conditions import Conditions
from wmgym.sim.gripper_track import GripperState

METHODS = ("best-of-n", "cem")
HELD_MODES = ("prior", "expectation")
GRASP_MODE_OF = {"prior": "probability", "expectation": "expectation"}  # held_mode -> wmgym.conditioning's grasp mode
PROPOSALS = ("gaussian", "uniform")


@dataclass(frozen=True)
class ProposalConfig:
    """How candidate action sequences are drawn.

    Attributes:
        kind: "gaussian" (around the nominal sequence) or "uniform" (positions and widths
            uniform within ACTION_LOW/ACTION_HIGH; CEM refits a Gaussian after iteration 0).
        position_std: standard deviation (metres) of the noise on each position delta.
        width_std: standard deviation (metres) of the noise on each gripper width.
    """

    kind: str = "gaussian"
    position_std: float = 0.01
    width_std: float = 0.01

    def __post_init__(self):
        if self.kind not in PROPOSALS:
            raise ValueError(f"unknown proposal kind {self.kind!r}; expected one of {PROPOSALS}")
        if not (self.position_std >= 0 and self.width_std >= 0):
            raise ValueError(f"position_std and width_std must be >= 0, got {self.position_std}, {self.width_std}")

    def std(self) -> np.ndarray:
        """float32 (20,): the noise scale per action component, 0 on the rotations."""
        std = np.zeros(ACTION_DIM, np.float32)
        std[POSITION_DIMS], std[WIDTH_DIMS] = self.position_std, self.width_std
        return std


@dataclass
class PlanResult:
    """What a planner returns.

    Attributes:
        actions: float32 (T, 20), the best candidate found.
        score: its reward-head score.
        scores: float32 (iterations, n), every candidate's score.
        mean: float32 (T, 20), the final sampling mean (CEM) or the nominal (best-of-N).
    """

    actions: np.ndarray
    score: float
    scores: np.ndarray
    mean: np.ndarray


def identity_sequence(horizon: int) -> np.ndarray:
    """float32 (T, 20): hold both grippers still at half-open width (the base without a nominal)."""
    hand = np.concatenate([np.zeros(3), IDENTITY_HAND_ROT6D, [0.5 * ACTION_HIGH[9]]])
    return np.tile(np.concatenate([hand, hand]), (horizon, 1)).astype(np.float32)


def check_sequence(actions, name: str = "nominal") -> np.ndarray:
    """A (T, 20) action sequence, T >= 1, as float32; ValueError naming the layout otherwise."""
    actions = validate_action(actions)
    if actions.ndim != 2 or actions.shape[0] < 1:
        raise ValueError(f"{name} must be an action sequence (T >= 1, {ACTION_DIM}), got shape {actions.shape}\n{ACTION_LAYOUT}")
    return actions


def sample_gaussian(mean: np.ndarray, std: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """mean (T, 20) + std ((T, 20) or (20,)) * N(0, 1) on the free dims -> clipped float32 (n, T, 20)."""
    out = np.repeat(mean[None], num, axis=0).astype(np.float32)  # (n, T, 20)
    noise = rng.standard_normal((num, mean.shape[0], len(FREE_DIMS)))  # (n, T, 8)
    out[..., FREE_DIMS] += (np.broadcast_to(std, mean.shape)[:, FREE_DIMS] * noise).astype(np.float32)
    return clip_to_bounds(out)


def sample_uniform(base: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """Positions and widths uniform within the bounds, rotations from base (T, 20) -> float32 (n, T, 20)."""
    out = np.repeat(base[None], num, axis=0).astype(np.float32)
    out[..., FREE_DIMS] = rng.uniform(ACTION_LOW[FREE_DIMS], ACTION_HIGH[FREE_DIMS], (num, base.shape[0], len(FREE_DIMS)))
    return out


def _proposal_mean(nominal, horizon: int | None, check_horizon: bool) -> np.ndarray:
    """The sequence proposals centre on, (T, 20): the nominal, or T steps of holding still."""
    if nominal is None:
        if horizon is None or horizon < 1:
            raise ValueError(f"without a nominal sequence give horizon >= 1, got {horizon}")
        return identity_sequence(horizon)
    mean = check_sequence(nominal)
    if check_horizon and horizon is not None and horizon != len(mean):
        raise ValueError(f"horizon {horizon} differs from the nominal's length {len(mean)}")
    return mean


def _as_rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.default_rng(seed)
    raise ValueError(f"seed must be an int, None or a numpy Generator, got {type(seed).__name__}")


def _context_grippers(grippers, num_context: int) -> list[GripperState]:
    """`grippers` as one GripperState per context frame, oldest first; ValueError when it does not fit."""
    if grippers is None:
        raise ValueError("the world model is conditioned on the grippers (view or pose): pass grippers=, the GripperState at the "
                         "newest context frame (e.g. GripperState.of_world(env.unwrapped.world) in SimFold-v0)")
    states = [grippers] if isinstance(grippers, GripperState) else list(grippers)
    if not states or not all(isinstance(g, GripperState) for g in states):
        raise ValueError(f"grippers must be a GripperState or a sequence of them, got {grippers!r}")
    if len(states) != num_context:
        raise ValueError(f"grippers must give the GripperState of each of the {num_context} context frames (one state "
                         f"serves a single context frame only), got {len(states)}")
    return states


def _as_frames(frames, name: str) -> np.ndarray:
    frames = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 1:
        raise ValueError(f"{name} must be uint8 frames (t >= 1, H, W, 3), got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)


class Planner:
    """Best-of-N or CEM over action sequences in a world model, scored by a reward head.

    Args:
        world_model: anything with `rollout(context uint8 (n, c, H, W, 3), actions (n, T, 20),
            generator=, num_steps=) -> uint8 (n, T, H, W, 3)` (`wmgym.model.world_model.WorldModel`);
            if it is conditioned on the grippers (view, pose or grasp state), `rollout` also gets
            `conditions=`, the candidates' `Conditions` (n, c + T), and `plan` needs `grippers=`.
        reward_head: a `wmgym.rewards.base.RewardHead` (`score(frames, goal) -> (n,)`).
        method: "best-of-n" or "cem".
        num_candidates: n, the candidates of one iteration (one batched rollout each).
        num_iterations: CEM iterations (best-of-N always does one).
        num_elites: CEM's elite set size, 1 <= num_elites <= n.
        momentum: CEM's smoothing, new = momentum * old + (1 - momentum) * elite statistic.
        proposal: how candidates are drawn.
        num_steps: denoising steps per frame (None: the checkpoint's default).
        include_mean: make candidate 0 of every iteration the current mean (the nominal at
            first), so the plan is never scored worse than the nominal in imagination.
        held_mode: for a held-conditioned world model, "prior" (the grasp prior's probability
            as its grasp state) or "expectation" (score = the prior-weighted mean of the scores
            imagined with every closing held and with none; 2n clips in the one batched call);
            ignored for other models.
    """

    def __init__(self, world_model, reward_head, *, method: str = "best-of-n", num_candidates: int = 64,
                 num_iterations: int = 3, num_elites: int = 8, momentum: float = 0.1,
                 proposal: ProposalConfig = ProposalConfig(), num_steps: int | None = None, include_mean: bool = False,
                 held_mode: str = "prior"):
        if method not in METHODS:
            raise ValueError(f"unknown planning method {method!r}; expected one of {METHODS}")
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        if num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
        if method == "cem" and not 1 <= num_elites <= num_candidates:
            raise ValueError(f"num_elites must be in [1, num_candidates={num_candidates}], got {num_elites}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if num_steps is not None and num_steps < 1:
            raise ValueError(f"num_steps must be >= 1 or None, got {num_steps}")
        if held_mode not in HELD_MODES:
            raise ValueError(f"unknown held_mode {held_mode!r}; expected one of {HELD_MODES}")
        if not callable(getattr(reward_head, "score", None)):
            raise ValueError(f"reward_head must implement RewardHead.score(frames, goal), got {type(reward_head).__name__}")
        self.world_model, self.reward_head = world_model, reward_head
        self.method, self.num_candidates = method, num_candidates
        self.num_iterations = num_iterations if method == "cem" else 1
        self.num_elites, self.momentum = num_elites, momentum
        self.proposal, self.num_steps, self.include_mean = proposal, num_steps, include_mean
        self.held_mode = held_mode

    def plan(self, context, goal, nominal=None, *, horizon: int | None = None, history=None, seed=None,
             grippers: GripperState | list[GripperState] | None = None) -> PlanResult:
        """Plan T steps from `context`.

        Args:
            context: uint8 (c, H, W, 3), the newest frames the world model starts from.
            goal: the reward head's goal (an image (H, W, 3) uint8 or a text).
            nominal: float (T, 20), the sequence Gaussian proposals centre on; None: hold still
                with identity rotations (uniform proposals take only its rotations).
            horizon: T when there is no nominal (with a nominal it must equal len(nominal)).
            history: uint8 (t0, H, W, 3) frames seen so far, put before the imagined ones for
                the reward head (video heads see the whole clip); None: the context.
            seed: int, None or numpy Generator: draws the proposals and the sampling noise.
            grippers: for a world model conditioned on the grippers view or pose (required
                then, else ValueError; ignored otherwise): the `GripperState` at the newest context frame,
                or a list of c states, one per context frame, oldest first (needed when c > 1).
                Each candidate's grippers views are rendered from the newest state.
        Returns:
            PlanResult; same seed and inputs give the same plan.
        """
        context = _as_frames(context, "context")
        states = _context_grippers(grippers, len(context)) if needs_grippers(self.world_model) else None
        history = context if history is None else _as_frames(history, "history")
        if history.shape[1:] != context.shape[1:]:
            raise ValueError(f"history frames {history.shape[1:]} and context frames {context.shape[1:]} differ in size")
        mean = _proposal_mean(nominal, horizon, check_horizon=True)
        rng = _as_rng(seed)
        generator = torch.Generator(device=self.world_model.device).manual_seed(int(rng.integers(2**63 - 1)))
        nominal_mean = mean.copy()
        std = np.broadcast_to(self.proposal.std(), mean.shape).copy()  # (T, 20)
        best_actions, best_score, all_scores = mean, -np.inf, []
        for iteration in range(self.num_iterations):
            if iteration == 0 and self.proposal.kind == "uniform":
                candidates = sample_uniform(mean, self.num_candidates, rng)
            else:
                candidates = sample_gaussian(mean, std, self.num_candidates, rng)
            if self.include_mean:
                candidates[0] = clip_to_bounds(mean)
            if states is None:
                scores = self.score_candidates(context, history, candidates, goal, generator)
            else:
                conditions, weights = candidate_conditions(self.world_model, states, candidates, context.shape[1:3],
                                                           GRASP_MODE_OF[self.held_mode])
                cases = len(weights)  # 2 for "expectation": every closing held, then none, in one batched call
                scores = self.score_candidates(context, history, np.concatenate([candidates] * cases) if cases > 1 else candidates,
                                               goal, generator, conditions)  # (cases * n,)
                if cases > 1:
                    scores = sum(w * part for w, part in zip(weights, scores.reshape(cases, -1))).astype(np.float32)
            all_scores.append(scores)
            best = int(np.argmax(scores))
            if scores[best] > best_score:
                best_actions, best_score = candidates[best], float(scores[best])
            if self.method == "cem":
                elites = candidates[np.argsort(-scores, kind="stable")[: self.num_elites]]  # (k, T, 20)
                a = self.momentum
                mean[:, FREE_DIMS] = a * mean[:, FREE_DIMS] + (1 - a) * elites[..., FREE_DIMS].mean(0)
                std[:, FREE_DIMS] = a * std[:, FREE_DIMS] + (1 - a) * elites[..., FREE_DIMS].std(0)
        return PlanResult(best_actions.copy(), best_score, np.stack(all_scores).astype(np.float32),
                          mean if self.method == "cem" else nominal_mean)

    def score_candidates(self, context: np.ndarray, history: np.ndarray, candidates: np.ndarray, goal,
                         generator: torch.Generator, conditions: Conditions | None = None) -> np.ndarray:
        """Roll out all n candidates (n, T, 20) in ONE batched call and score them -> float (n,).

        `conditions`: the candidates' `Conditions` (n, c + T) for a conditioned world model
        (`wmgym.conditioning.candidate_conditions`), else None."""
        n, horizon = candidates.shape[:2]
        device = self.world_model.device
        batch_context = torch.from_numpy(context).to(device)[None].expand(n, *context.shape)  # (n, c, H, W, 3)
        extra = {} if conditions is None else {"conditions": conditions.to(device)}
        imagined = self.world_model.rollout(batch_context, torch.from_numpy(candidates).to(device),
                                            generator=generator, num_steps=self.num_steps, **extra)  # (n, T, H, W, 3)
        if tuple(imagined.shape) != (n, horizon, *context.shape[1:]):
            raise ValueError(f"world_model.rollout returned {tuple(imagined.shape)}, expected {(n, horizon, *context.shape[1:])}")
        past = torch.from_numpy(history).to(imagined.device)[None].expand(n, *history.shape)  # (n, t0, H, W, 3)
        clips = torch.cat([past, imagined], dim=1)  # (n, t0 + T, H, W, 3)
        scores = self.reward_head.score(clips, goal)
        scores = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, np.float32)
        if scores.shape != (n,):
            raise ValueError(f"reward head returned scores of shape {scores.shape}, expected ({n},)")
        return scores


class RandomProposal:
    """One proposal drawn as a `Planner` with the same ProposalConfig draws it, executed
    without any world model or scoring: the baseline that says what selection adds."""

    def __init__(self, proposal: ProposalConfig = ProposalConfig()):
        self.proposal = proposal

    def plan(self, context, goal, nominal=None, *, horizon: int | None = None, history=None, seed=None,
             grippers=None) -> PlanResult:
        """As `Planner.plan`; context, history and grippers are not used."""
        mean = _proposal_mean(nominal, horizon, check_horizon=False)
        rng = _as_rng(seed)
        if self.proposal.kind == "uniform":
            actions = sample_uniform(mean, 1, rng)[0]
        else:
            actions = sample_gaussian(mean, self.proposal.std(), 1, rng)[0]
        return PlanResult(actions, float("nan"), np.full((1, 1), np.nan, np.float32), mean)
