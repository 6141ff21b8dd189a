"""End-to-end dataset generation speed: `generate()` into a fresh store, per resolution, for this
working tree and a previous commit in the same run.

Issue 3's target: the seed's 5,248 episodes (17 frames each, 89,216 frames) at 64x64 in
at most 10 minutes on this machine's two cores, i.e. at least ~150 frames/s overall
(simulation in the worker pool, zarr writes in the parent, everything counted).

    python benchmarks/generation_speed.py --episodes 200 --resolutions 64   # issue 41's check: 2 rounds of both trees, ~2 min
    python benchmarks/generation_speed.py --episodes 5248 --resolutions 64 --rounds 1 --json gen64.json
    python benchmarks/generation_speed.py --episodes 1000 --resolutions 128 --rounds 1 --baseline none --json gen128.json

Per resolution, `--rounds` times (default 2), alternately: this working tree, then `--baseline`
(default: main before issue 41's generation speed-up), which is extracted with `git archive` into
a temporary folder and imported from there; each run is a fresh process (`--worker`) with its
tree first on PYTHONPATH, so its pool's workers import that tree too. The best round of each
is reported, with the ratio current / baseline; `--baseline none` times this tree alone.
Each run writes into a new temporary store under `--out-dir` and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import shutil
import sys
import tempfile
import time
from pathlib import Path

BASELINE = "38d5865"  # main before issue 41's generation speed-up
ROOT = Path(__file__).resolve().parent.parent
TARGET_EPISODES = 5248  # the seed's dataset size (issue 3)
TARGET_SECONDS = 600.0  # ... generated in at most 10 minutes
TARGET_FRAMES_PER_SECOND = 150.0  # = 5,248 x 17 frames / 600 s, rounded up from 148.7


class _Capture(logging.Handler):
    """Keeps the throughput line `generate` logs (it also names the writer's frames/s)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def code_version() -> str:
    """`git describe --always --dirty` of the checkout the numbers came from ("unknown" outside git)."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    """What ran the benchmark: docs/design.md, "Scale and benchmarks", asks every benchmark to name its machine."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cpu_count": os.cpu_count()}


def _store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(episodes: int, resolution: int, workers: int, out_dir: str, horizon: int = 16,
            show_progress: bool = True) -> dict:
    """Run `generate` once into a fresh temporary store; return the figures as a dict."""
    # Imported here, not at the top: the pool's spawned workers re-import this script, and the
    # parent that only compares trees must not import either tree's wmgym.
    from wmgym.data.generate import GenerateConfig, generate

    capture = _Capture()
    gen_logger = logging.getLogger("wmgym.data.generate")
    gen_logger.addHandler(capture)
    old_level = gen_logger.level
    gen_logger.setLevel(logging.INFO)
    tmp = Path(tempfile.mkdtemp(prefix=f"wmgym_gen{resolution}_", dir=out_dir))
    store = tmp / "episodes.zarr"
    try:
        config = GenerateConfig(out=str(store), episodes=episodes, resolution=resolution,
                                horizon=horizon, workers=workers, show_progress=show_progress)
        start = time.perf_counter()
        generate(config)
        seconds = time.perf_counter() - start
        size = _store_bytes(store)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        gen_logger.removeHandler(capture)
        gen_logger.setLevel(old_level)
    frames = episodes * (horizon + 1)
    result = {
        "resolution": resolution,
        "episodes": episodes,
        "frames": frames,
        "workers": workers or os.cpu_count(),
        "wall_seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 1),
        "episodes_per_second": round(episodes / seconds, 2),
        "store_megabytes": round(size / 2**20, 1),
        "generate_log": capture.messages[-1] if capture.messages else "",
    }
    if resolution == 64:
        # Projected time of the full 5,248-episode dataset at the measured rate.
        projected = TARGET_EPISODES * (horizon + 1) / result["frames_per_second"]
        result["projected_seconds_for_5248_episodes"] = round(projected, 1)
        # The target is the 10 minutes; 150 frames/s is that rate rounded up, reported beside it.
        result["meets_10_minutes"] = bool(projected <= TARGET_SECONDS)
        result["meets_150_frames_per_second"] = bool(result["frames_per_second"] >= TARGET_FRAMES_PER_SECOND)
    return result


def worker(args) -> None:
    """One `measure` in this process (the tree first on sys.path is the one measured): prints JSON."""
    import wmgym

    result = measure(args.episodes, args.resolutions[0], args.workers, args.out_dir, show_progress=not args.no_progress)
    result["wmgym"] = str(Path(wmgym.__file__).resolve().parent)
    print("RESULT " + json.dumps(result), flush=True)


def measure_tree(tree: Path, resolution: int, args) -> dict:
    """`measure` in a fresh process that imports wmgym from `tree`."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--episodes", str(args.episodes),
               "--resolutions", str(resolution), "--workers", str(args.workers)] + (["--no-progress"] if args.no_progress else [])
    if args.out_dir:
        command += ["--out-dir", str(Path(args.out_dir).resolve())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    done = subprocess.run(command, cwd=tree, env=env, stdout=subprocess.PIPE, text=True)  # progress bar on stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"measuring {tree} at {resolution}x{resolution} failed (exit {done.returncode}; "
                           "its error is printed above)")
    result = json.loads(lines[-1][len("RESULT "):])
    if Path(result["wmgym"]) != (tree / "wmgym").resolve():
        raise RuntimeError(f"the worker imported wmgym from {result['wmgym']}, not {tree}")
    return result


def _best(rounds: list[dict]) -> dict:
    """The fastest of a tree's runs, with every round's frames/s beside it."""
    best = dict(max(rounds, key=lambda run: run["frames_per_second"]))
    best["rounds_frames_per_second"] = [run["frames_per_second"] for run in rounds]
    return best


def _line(r: dict) -> str:
    """A run's figures in one line, with issue 3's verdicts at 64x64."""
    resolution = r["resolution"]
    line = (f"{resolution}x{resolution}: {r['episodes']} episodes, {r['frames']} frames, "
            f"{r['workers']} workers, {r['wall_seconds']:.1f} s -> "
            f"{r['frames_per_second']:.1f} frames/s end to end, store {r['store_megabytes']} MB")
    if "meets_10_minutes" in r:
        line += (f"; 5,248 episodes take {r['projected_seconds_for_5248_episodes']:.0f} s at this rate"
                 f" -> issue 3: <= 10 min {'MET' if r['meets_10_minutes'] else 'MISSED'}, "
                 f">= {TARGET_FRAMES_PER_SECOND:.0f} frames/s "
                 f"{'MET' if r['meets_150_frames_per_second'] else 'MISSED'}")
    return line


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=TARGET_EPISODES,
                        help="episodes to generate per resolution (default: the seed's 5,248)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128],
                        help="square image sizes to measure, `--rounds` runs of each tree each")
    parser.add_argument("--workers", type=int, default=0,
                        help="simulator processes; 0 = os.cpu_count() (as `generate`)")
    parser.add_argument("--out-dir", default=None,
                        help="where the temporary stores go (default: the system temp dir)")
    parser.add_argument("--baseline", default=BASELINE,
                        help="the commit compared against (git rev), or 'none' to time this tree alone")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating runs of each tree per resolution; the best of them is reported")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    has_baseline = args.baseline.lower() != "none"

    report = {"benchmark": "generation_speed", "date": time.strftime("%Y-%m-%d"),
              "machine": machine(),
              "code_version": code_version(),
              "target": {"episodes": TARGET_EPISODES, "seconds": TARGET_SECONDS,
                         "frames_per_second": TARGET_FRAMES_PER_SECOND, "resolution": 64},
              "rounds": args.rounds,
              "runs": []}
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}")
    with tempfile.TemporaryDirectory(prefix="wmgym_baseline_") as tmp:
        baseline = Path(tmp)
        if has_baseline:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline], check=True,
                                    capture_output=True, text=True).stdout.strip()
            report["baseline"] = {"commit": commit, "runs": []}
            report["ratios"] = {}
        for resolution in args.resolutions:
            current_rounds, baseline_rounds = [], []
            for k in range(1, args.rounds + 1):
                current_rounds.append(measure_tree(ROOT, resolution, args))
                print(f"round {k}, current: {_line(current_rounds[-1])}", flush=True)
                if has_baseline:
                    baseline_rounds.append(measure_tree(baseline, resolution, args))
                    print(f"round {k}, baseline {commit}: {_line(baseline_rounds[-1])}", flush=True)
            r = _best(current_rounds)
            report["runs"].append(r)
            print(f"best of {args.rounds}, current: {_line(r)}", flush=True)
            if has_baseline:
                b = _best(baseline_rounds)
                report["baseline"]["runs"].append(b)
                ratio = r["frames_per_second"] / b["frames_per_second"]
                report["ratios"][str(resolution)] = round(ratio, 3)
                print(f"best of {args.rounds}, baseline {commit}: {_line(b)}", flush=True)
                print(f"{resolution}x{resolution}: current / baseline {commit} = {r['frames_per_second']:.1f} / "
                      f"{b['frames_per_second']:.1f} frames/s = x{ratio:.2f}", flush=True)
    fps = {r["resolution"]: r["frames_per_second"] for r in report["runs"]}
    if 64 in fps and 128 in fps:
        # A ratio measured in one run (docs/design.md, "Scale and benchmarks"): how much 4x the pixels costs.
        report["ratio_fps_64_over_128"] = round(fps[64] / fps[128], 2)
        print(f"frames/s ratio 64x64 / 128x128: {report['ratio_fps_64_over_128']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
