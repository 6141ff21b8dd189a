"""WMFold-v0 speed: this commit's defaults against a previous commit's, in one run.

    python benchmarks/env_speed.py --json env_speed.json              # envs 1 / 4 / 16 / 64, ~10 min on 2 cores
    python benchmarks/env_speed.py --envs 16 --repeats 1              # quick check
    python benchmarks/env_speed.py --device cuda --envs 16 256 1024   # on a GPU (benchmarks/device/)

For each number of envs, alternately in fresh processes: imagined env steps per second of a
`gym.make_vec("WMFold-v0")` stepping random in-bound actions (`wmgym.eval.speed`) with the
shipped bundle and each tree's defaults, for this working tree and for `--baseline` (default:
the commit before issue 41), which is extracted with `git archive` into a temporary folder and
imported from there. The ratio current / baseline is printed per env count.

In the current tree only, at each env count: the bare `WorldModel.rollout` of the same frames
(the conditions rendered and the grasp state drawn before the clock starts), so the env layer's
share (grippers tracks, rewards, judge, trust, Gymnasium) is env time / bare time - 1; and at
16 envs (or the largest asked below it) the denoiser's achieved FLOP/s during that rollout
(`torch.utils.flop_counter`) as a fraction of a dense matmul measured in the same process.
Best of `--repeats` after a warm-up episode.

`--sweep` also times the current tree at 16 envs (or the largest asked below it) under each
combination of denoiser precision (fp32 / bf16, `SamplerDefaults.precision`), sampler steps
(1 / 2) and torch threads (1 / all), each in a fresh process, to choose the defaults from;
`--sweep-compile` adds each under `torch.compile` of the denoiser (compiled before the clock
starts; minutes each on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

BASELINE = "e3bb47e"  # main before issue 41 (the speed issue)
ROOT = Path(__file__).resolve().parent.parent


def bare_rollout(num_envs: int, steps: int, repeats: int, device: str, count_flops: bool) -> dict:
    """The bundle's world model alone: seconds for `steps` frames of `num_envs` rows, and FLOP/s."""
    import numpy as np
    import torch

    from wmgym.conditioning import model_conditions, needs_grippers
    from wmgym.envs.bundle import Bundle
    from wmgym.eval.speed import matmul_flops_per_second, random_actions, timed
    from wmgym.model.world_model import WorldModel
    from wmgym.sim.gripper_track import gripper_views
    from wmgym.sim.world import WorldConfig

    bundle = Bundle.load()
    model = WorldModel.from_pretrained(bundle.world_model_dir, device=device).eval()
    rows = np.arange(num_envs) % len(bundle.start_frames)
    frames = bundle.start_frames[rows][:, None]  # (n, 1, H, W, 3)
    actions = random_actions(steps, num_envs).transpose(1, 0, 2)  # (n, T, 20)
    conditions = None
    if needs_grippers(model):
        views, poses = gripper_views([bundle.start_grippers[i] for i in rows], actions,
                                     WorldConfig(height=bundle.height, width=bundle.width), with_poses=True)
        conditions = model_conditions(model, views, poses)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def run():
        with torch.no_grad():
            model.rollout(frames, actions, generator=torch.Generator(model.device).manual_seed(0), conditions=conditions)
        sync()

    seconds = timed(run, repeats)
    out = {"bare_seconds": seconds, "bare_frames_per_s": num_envs * steps / seconds}
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            run()
        out["denoiser_flops_per_s"] = counter.get_total_flops() / seconds
        out["matmul_flops_per_s"] = matmul_flops_per_second(str(model.device))
        out["fraction_of_matmul"] = out["denoiser_flops_per_s"] / out["matmul_flops_per_s"]
    return out


def worker(args) -> None:
    """One measurement in this process (the tree on sys.path is the one measured): prints JSON."""
    import torch

    import wmgym
    from wmgym.eval.speed import timed, vector_env_episode

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {k: v for k, v in (("precision", args.precision), ("num_steps", args.num_steps)) if v is not None}
    episode, envs = vector_env_episode(args.envs[0], args.steps, device=args.device, **settings)
    if args.compile:  # the env's denoiser through TorchInductor; the KV cache's growing length makes shapes dynamic
        model = envs.unwrapped.core.model
        model.denoiser = torch.compile(model.denoiser, dynamic=True)
        episode()  # compiling, outside the timing
    result = {"wmgym": str(Path(wmgym.__file__).resolve().parent), "threads": torch.get_num_threads(), **settings,
              "compile": args.compile, "env_steps_per_s": args.envs[0] * args.steps / timed(episode, args.repeats)}
    envs.close()
    if args.bare:
        result.update(bare_rollout(args.envs[0], args.steps, args.repeats, args.device, args.flops))
    print("RESULT " + json.dumps(result))


def measure(tree: Path, num_envs: int, args, bare: bool = False, flops: bool = False, settings: tuple = ()) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--envs", str(num_envs), "--steps", str(args.steps),
               "--repeats", str(args.repeats), "--device", args.device] + (["--bare"] if bare else []) + (["--flops"] if flops else [])
    command += [str(x) for x in settings]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"measuring {tree} with {num_envs} envs failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    if Path(result["wmgym"]) != (tree / "wmgym").resolve():
        raise RuntimeError(f"the worker imported wmgym from {result['wmgym']}, not {tree}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--steps", type=int, default=8, help="env steps per timed episode")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many episodes, after a warm-up one")
    parser.add_argument("--baseline", default=BASELINE, help="the commit compared against (git rev)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--sweep", action="store_true", help="also time precision x sampler steps x threads at 16 envs")
    parser.add_argument("--sweep-compile", action="store_true",
                        help="with --sweep, also each combination under torch.compile (minutes of compiling each)")
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--num-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    flops_at = max([n for n in args.envs if n <= 16], default=min(args.envs))
    rows = []
    with tempfile.TemporaryDirectory(prefix="wmgym_baseline_") as tmp:
        baseline = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline], check=True, capture_output=True,
                                text=True).stdout.strip()
        for n in args.envs:
            current = measure(ROOT, n, args, bare=True, flops=n == flops_at)
            previous = measure(baseline, n, args, bare=False, flops=False)
            row = {"envs": n, "current": current, "baseline": previous,
                   "ratio": current["env_steps_per_s"] / previous["env_steps_per_s"],
                   "env_layer_overhead": current["bare_frames_per_s"] / current["env_steps_per_s"] - 1}
            rows.append(row)
            line = (f"{n:5d} envs: {current['env_steps_per_s']:8.1f} env steps/s against {previous['env_steps_per_s']:8.1f} at "
                    f"{commit} (x{row['ratio']:.2f}); bare WorldModel {current['bare_frames_per_s']:8.1f} frames/s, env layer "
                    f"+{row['env_layer_overhead']:.0%}")
            if "fraction_of_matmul" in current:
                line += (f"; denoiser {current['denoiser_flops_per_s'] / 1e9:.2f} GFLOP/s = {current['fraction_of_matmul']:.1%} of "
                         f"a dense matmul ({current['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s)")
            print(line, flush=True)
    sweep = []
    if args.sweep:
        for precision in ("fp32", "bf16"):
            for num_steps in (1, 2):
                for threads in sorted({1, os.cpu_count() or 1}):
                    settings = ("--precision", precision, "--num-steps", num_steps, "--threads", threads)
                    for compiled in (False, True) if args.sweep_compile else (False,):
                        sweep.append(measure(ROOT, flops_at, args, settings=settings + (("--compile",) if compiled else ())))
                        print(f"{flops_at} envs, {precision}, {num_steps} sampler steps, {threads} threads"
                              f"{', torch.compile' if compiled else ''}: {sweep[-1]['env_steps_per_s']:.1f} env steps/s", flush=True)
    result = {"benchmark": "env_speed", "baseline": commit, "device": args.device, "steps": args.steps, "repeats": args.repeats,
              "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}, "rows": rows, "sweep": sweep}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
