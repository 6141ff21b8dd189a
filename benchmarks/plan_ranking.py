"""How well do imagined rollouts rank a planner's proposals? Imagined vs simulated outcomes of the same candidates.

    python benchmarks/plan_ranking.py --starts 8 --n 64 --out /work/runs/plan_ranking.json   # ~25 min, one thread

For each task and start state (SimFold-v0 `reset(seed=s)`, s = 0..starts-1), N proposals are
drawn exactly as `wmgym plan` draws them (Gaussian around the scripted demonstrator's
sequence, `ProposalConfig()`: 1 cm on positions and widths, or --position-std / --width-std)
for the whole episode (16 steps),
then
  - imagined: the bundle's world model rolls all N out in one batched call from the start
    frame (with the grippers views for a conditioned model; --num-steps denoising steps per
    frame and --guidance-scale on the action, defaults the bundle's), and every scorer scores the
    imagined clips: LPIPS (offline trunk) of the last imagined frame to the goal image, the
    success judge's p(done), and that judge's verdict on the clip so far at each step (the
    environment's first-accept rule, as WMFold-v0 ends an episode);
  - simulated: each candidate is executed open loop in a copy of the simulator (ground-truth
    success: the task done at some step, SimFold-v0's termination), and LPIPS of its last
    simulated frame to the goal is the same scorer on true frames;
  - with a simulator-calibrated LPIPS (`--lpips-calibrated DIR`, default the bundle's lpips/):
    its distance of the last imagined frame (calibrated_imagined) and of the last simulated
    frame (calibrated_sim) to the goal;
  - world-model-free references (no imagined frame is looked at): `drift`, minus the 3-D
    distance of the candidate's gripper from the nominal's at the frame where the nominal
    closes it (worst hand; the kinematics of the actions, as `grasp_resolution.py` measures it),
    and with `--pose-classifier DIR` (a `grasp_predictability.py --save-pose-classifier` run),
    `pose_prior`, that classifier's logit of the candidate's success from its grippers' pose
    vector at every frame: what a world model that read its pose condition perfectly could rank by;
  - for a held-conditioned world model (`train-wm --held-conditioning`), the imagined columns
    draw the grasp state from the model's grasp prior (`grasp_prior/` in its directory, or
    `--grasp-prior DIR`); `grasp_prior` ranks by the prior alone (the sum over the hands that
    close of log p(the grasp catches), no frame looked at), and with `--oracle-held` every
    imagined scorer is also run on clips imagined with the simulator's own grasp state of each
    candidate (columns `<scorer>_oracle_held`): what the world model makes of a perfect prior;
    with `--held-expectation` every candidate is also imagined with every closing held
    (`<scorer>_held1`) and with none (`<scorer>_held0`), and `<scorer>_expected` weighs the two
    by the prior's probability that all its closings catch (`GraspPrior.held_cases`): the model
    only ever saw 0/1 grasp states, so this asks whether the expectation over them ranks better
    than one rollout with the prior's soft probability; `--skip-prior-run` drops that soft run;
  - with `--samples K` (K > 1), every candidate is imagined K times (K seeded sampler noises;
    the first is the K = 1 run's), and each imagined score is also averaged over the K clips
    (columns `<scorer>_mean<K>`): does averaging out the sampler's noise rank better?
Reported per task: the candidates' success rate (= executing one random proposal), the success
of the top-1 candidate under each scorer (= best-of-N), ROC AUC of each score for telling the
successful candidates apart, and the same for the sim-frame scorer (what a perfect world model
would allow). Writes every score to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import wmgym  # noqa: F401  (registers the environments)
from wmgym.conditioning import is_held_conditioned, model_conditions
from wmgym.envs.bundle import Bundle
from wmgym.eval.ranking import roc_auc
from wmgym.model.world_model import WorldModel
from wmgym.policies.mpc import make_reward_head, scripted_nominal
from wmgym.policies.planning import ProposalConfig, sample_gaussian
from wmgym.rewards.lpips_head import LPIPSHead
from wmgym.sim.gripper import GRASP_WIDTH
from wmgym.sim.gripper_track import GripperState, gripper_views
from wmgym.sim.world import WorldConfig
from wmgym.sim.tasks import TASKS
from wmgym.train.checkpoint import write_text_atomic


def simulate(env: gym.Env, actions: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray]:
    """Execute (T, 20) open loop in a copy of the reset env -> (success, last frame, held): held
    float32 (T + 1, 2) is the simulator's grasp state (each gripper holds cloth) at every frame,
    the last one's repeated after an early end."""
    twin = copy.deepcopy(env)
    holding = lambda: [float(h is not None and len(h[0]) > 0) for h in twin.unwrapped.world.held]
    obs, success, held = None, False, [holding()]
    for action in actions:
        obs, _, terminated, truncated, info = twin.step(action)
        success = success or bool(info["success"])
        held.append(holding())
        if terminated or truncated:
            break
    held += [held[-1]] * (len(actions) + 1 - len(held))
    return success, obs, np.array(held, np.float32)


def top1_and_auc(scores: list, successes: list) -> tuple[float, float]:
    """Over start states, each with n candidates' scores and simulated successes: the success
    rate of the top-scored candidate (best-of-n) and the mean within-start ROC AUC (start
    states where every candidate succeeded or failed have none)."""
    top1 = float(np.mean([success[int(np.argmax(score))] for score, success in zip(scores, successes)]))
    aucs = [roc_auc(score, success) for score, success in zip(scores, successes)]
    return top1, float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")


def nominal_drift(candidate_poses: np.ndarray, nominal_poses: np.ndarray) -> np.ndarray:
    """float (n,): the worst hand's 3-D distance between each candidate's tool centre (pose
    vectors (n, T + 1, 8)) and the nominal's ((T + 1, 8)) at the first frame where the nominal's
    width is below GRASP_WIDTH (where it grasps); hands that never close are skipped, and with
    none closing the largest distance over all frames counts."""
    distances = []
    for hand in range(2):
        xyz, w = slice(4 * hand, 4 * hand + 3), 4 * hand + 3
        closed = np.flatnonzero(nominal_poses[:, w] < GRASP_WIDTH)
        if len(closed):
            distances.append(np.linalg.norm(candidate_poses[:, closed[0], xyz] - nominal_poses[closed[0], xyz], axis=-1))
    if not distances:
        distances = [np.linalg.norm(candidate_poses[..., xyz] - nominal_poses[..., xyz], axis=-1).max(1)
                     for xyz in (slice(0, 3), slice(4, 7))]
    return np.max(distances, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="bundle directory (default: the shipped one)")
    parser.add_argument("--world-model", default=None, help="world-model directory replacing the bundle's (e.g. a train-wm run's latest/ema)")
    parser.add_argument("--starts", type=int, default=8, help="start states per task")
    parser.add_argument("--n", type=int, default=64, help="proposals per start state")
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--samples", type=int, default=1,
                        help="imagine every candidate this many times and also score the mean over them")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="denoising steps per imagined frame (default: the bundle's sampler default)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance on each frame's action (default: the bundle's, 1 = off)")
    parser.add_argument("--position-std", type=float, default=ProposalConfig.position_std, help="proposal noise on positions (m)")
    parser.add_argument("--width-std", type=float, default=ProposalConfig.width_std, help="proposal noise on widths (m)")
    parser.add_argument("--lpips-calibrated", default=None,
                        help="a `wmgym train-lpips` directory to score with as well (default: the bundle's lpips/, if any)")
    parser.add_argument("--pose-classifier", default=None,
                        help="a `grasp_predictability.py --save-pose-classifier` directory: also rank by its pose logit")
    parser.add_argument("--grasp-prior", default=None,
                        help="a `wmgym train-grasp-prior` directory for a held-conditioned world model (default: its own grasp_prior/)")
    parser.add_argument("--oracle-held", action="store_true",
                        help="held-conditioned model: also imagine every candidate with the simulator's grasp state")
    parser.add_argument("--held-expectation", action="store_true",
                        help="held-conditioned model: also imagine every candidate with every closing held and with none, "
                             "and score p_all * score(held) + (1 - p_all) * score(missed) (`GraspPrior.held_cases`)")
    parser.add_argument("--skip-prior-run", action="store_true",
                        help="held-conditioned model: skip the run with the prior's soft grasp state (when another run has it)")
    parser.add_argument("--save-poses", default=None,
                        help="an .npz file for every candidate's pose vectors (starts, n, T + 1, 8), success and task: "
                             "rank by another pose classifier later without imagining or simulating again")
    args = parser.parse_args()
    if args.samples < 1:
        parser.error(f"--samples must be >= 1, got {args.samples}")
    torch.set_num_threads(args.threads)
    proposal = ProposalConfig(position_std=args.position_std, width_std=args.width_std)
    bundle = Bundle.load(args.checkpoint)
    world_model = WorldModel.from_pretrained(args.world_model or bundle.world_model_dir, device="cpu").eval()
    if args.grasp_prior:
        from wmgym.model.grasp_prior import GraspPrior
        world_model.grasp_prior = GraspPrior.from_pretrained(args.grasp_prior)
    held_model = is_held_conditioned(world_model)
    if held_model and world_model.grasp_prior is None:
        parser.error("the world model is held-conditioned and has no grasp_prior/: pass --grasp-prior DIR")
    if (args.oracle_held or args.held_expectation or args.skip_prior_run) and not held_model:
        parser.error("--oracle-held, --held-expectation and --skip-prior-run need a held-conditioned world model")
    lpips = make_reward_head("lpips-offline", args.checkpoint, "cpu")
    calibrated_dir = args.lpips_calibrated or bundle.lpips_dir
    calibrated = None if calibrated_dir is None else LPIPSHead(calibrated=calibrated_dir, device="cpu")
    judge_scorer = make_reward_head("judge", args.checkpoint, "cpu")
    judge = judge_scorer.judge
    pose_prior = None
    if args.pose_classifier:
        from grasp_predictability import load_pose_classifier  # beside this file
        pose_prior = load_pose_classifier(args.pose_classifier)
    began, records, all_poses = time.perf_counter(), [], []
    bar = tqdm(total=len(TASKS) * args.starts, desc="start states")
    for task in TASKS:
        env = gym.make("SimFold-v0", task=task, horizon=args.horizon)
        for s in range(args.starts):
            obs, _ = env.reset(seed=args.seed + s)
            sim = env.unwrapped
            goal = sim.world.render_goal()
            nominal = scripted_nominal(env, obs[None], args.horizon)
            rng = np.random.default_rng([args.seed, s, TASKS.index(task)])
            candidates = sample_gaussian(nominal, proposal.std(), args.n, rng)  # (n, T, 20)
            # one context frame: candidate_conditions' views and poses, rendered once for the model and the references
            state = GripperState.of_world(sim.world)
            scene = WorldConfig(height=obs.shape[0], width=obs.shape[1])
            views, poses = gripper_views([state] * args.n, candidates, scene, with_poses=True)  # (n, T + 1, H, W, 3), (n, T + 1, 8)
            outcomes = [simulate(env, c) for c in candidates]  # first: --oracle-held imagines with their grasp state
            success = np.array([o[0] for o in outcomes])
            runs = {} if args.skip_prior_run else {"": model_conditions(world_model, views, poses)}  # column suffix -> Conditions
            if args.held_expectation:
                held_all, missed, p_all = world_model.grasp_prior.held_cases(poses)
                runs["_held1"] = model_conditions(world_model, views, poses, held=held_all.numpy())
                runs["_held0"] = model_conditions(world_model, views, poses, held=missed.numpy())
            if args.oracle_held:
                runs["_oracle_held"] = model_conditions(world_model, views, poses, held=np.stack([o[2] for o in outcomes]))
            seed = int(rng.integers(2**63 - 1))
            context = torch.from_numpy(obs)[None, None].expand(args.n, 1, *obs.shape)  # (n, 1, H, W, 3)
            imagined_scores = []  # per sample: {scorer: (n,)}
            for k in range(args.samples):
                scores = {}
                for suffix, extra in runs.items():
                    generator = torch.Generator().manual_seed(seed + k)
                    with torch.no_grad():
                        imagined = world_model.rollout(context, torch.from_numpy(candidates), generator=generator,
                                                         num_steps=args.num_steps, guidance_scale=args.guidance_scale, conditions=extra)  # (n, T, H, W, 3)
                    clips = torch.cat([context, imagined], 1)
                    scores.update({"lpips_imagined" + suffix: lpips.score(clips, goal).float().numpy(),
                                   "judge_final" + suffix: judge_scorer.score(clips, task).float().numpy(),
                                   "judge_peak" + suffix: np.max([judge.probability(clips[:, : t + 1], task).float().numpy()
                                                                  for t in range(1, clips.shape[1])], 0)})
                    if calibrated is not None:
                        scores["calibrated_imagined" + suffix] = calibrated.score(clips, goal).float().numpy()
                if args.held_expectation:
                    w = p_all.numpy()
                    for name in [n[: -len("_held1")] for n in scores if n.endswith("_held1")]:
                        scores[name + "_expected"] = w * scores[name + "_held1"] + (1 - w) * scores[name + "_held0"]
                imagined_scores.append(scores)
            _, nominal_poses = gripper_views([state], nominal[None], scene, with_poses=True)
            references = {"drift": -nominal_drift(poses, nominal_poses[0])}
            all_poses.append(poses)
            if pose_prior is not None:
                references["pose_prior"] = pose_prior(poses)
            if held_model:  # per hand that closes: log of its largest p(held) (one closing a hand, as a rule)
                p = world_model.grasp_prior.frame_held(poses).numpy().max(axis=1)  # (n, 2)
                closes = (poses[..., [3, 7]] < GRASP_WIDTH).any(axis=1)
                references["grasp_prior"] = np.where(closes, np.log(np.maximum(p, 1e-6)), 0.0).sum(1)
            sim_last = torch.from_numpy(np.stack([o[1] for o in outcomes]))[:, None]  # (n, 1, H, W, 3)
            lpips_sim = lpips.score(sim_last, goal).float().numpy()
            records.append({"task": task, "seed": args.seed + s, "success": success.tolist(),
                            **{name: v.tolist() for name, v in imagined_scores[0].items()}, "lpips_sim": lpips_sim.tolist(),
                            **{name: np.asarray(v, float).tolist() for name, v in references.items()}})
            if calibrated is not None:
                records[-1]["calibrated_sim"] = calibrated.score(sim_last, goal).float().numpy().tolist()
            if args.samples > 1:
                for name in imagined_scores[0]:
                    records[-1][f"{name}_mean{args.samples}"] = np.mean([x[name] for x in imagined_scores], 0).tolist()
            bar.update(1)
    bar.close()
    imagined_names = ("lpips_imagined", "judge_final", "judge_peak") + (("calibrated_imagined",) if calibrated is not None else ())
    scorers = (() if args.skip_prior_run else ("lpips_imagined", "judge_final", "judge_peak")) + ("lpips_sim", "drift") + (("pose_prior",) if pose_prior else ()) \
        + (("grasp_prior",) if held_model else ())
    if calibrated is not None:
        scorers += (() if args.skip_prior_run else ("calibrated_imagined",)) + ("calibrated_sim",)
    if args.oracle_held:
        scorers += tuple(f"{name}_oracle_held" for name in imagined_names)
    if args.held_expectation:
        scorers += tuple(f"{name}_{case}" for case in ("held1", "held0", "expected") for name in imagined_names)
    if args.samples > 1:
        scorers += tuple(f"{name}_mean{args.samples}" for name in imagined_scores[0])
    summary = {}
    for task in TASKS:
        rows = [r for r in records if r["task"] == task]
        entry = {"random_proposal": float(np.mean([np.mean(r["success"]) for r in rows])), "starts": len(rows)}
        for name in scorers:
            entry[f"top1_{name}"], entry[f"auc_{name}"] = top1_and_auc([r[name] for r in rows], [r["success"] for r in rows])
        peak = next(name for name in ("judge_peak", "judge_peak_held1", "judge_peak_oracle_held") if name in rows[0])
        entry["judge_accepts"] = float(np.mean([np.mean(np.array(r[peak]) >= judge.threshold) for r in rows]))  # of that run's clips
        summary[task] = entry
    result = {"machine": f"{platform.machine()}, {args.threads} thread(s)", "args": vars(args), "judge_threshold": judge.threshold,
              "lpips_calibrated": None if calibrated_dir is None else str(calibrated_dir),
              "seconds": time.perf_counter() - began, "summary": summary, "records": records}
    print("| task | random proposal | " + " | ".join(f"best-of-{args.n} by {s} (AUC)" for s in scorers) + " | judge accepts |")
    print("|---" * (len(scorers) + 3) + "|")
    for task, e in summary.items():
        cells = " | ".join(f"{e[f'top1_{s}']:.0%} ({e[f'auc_{s}']:.2f})" for s in scorers)
        print(f"| {task} | {e['random_proposal']:.0%} | {cells} | {e['judge_accepts']:.0%} |")
    if args.out:
        write_text_atomic(Path(args.out), json.dumps(result, indent=1))
    if args.save_poses:
        np.savez_compressed(args.save_poses, poses=np.stack(all_poses), success=np.array([r["success"] for r in records]),
                            task=np.array([r["task"] for r in records]), seed=np.array([r["seed"] for r in records]))


if __name__ == "__main__":
    main()
