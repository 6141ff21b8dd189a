"""What the per-step trust score costs: WMFold-v0 vector env steps/s with trust on and off, in one run.

    OMP_NUM_THREADS=2 python benchmarks/trust_overhead.py --envs 1 16 --repeats 5

"Off" is the same env with its trust calibration removed: the sampler then skips the two
reductions that feed trust (`Imagination.track_trust`) and the tracker does nothing. Both
settings alternate, best of `--repeats` episodes each, default reward and success judge.
"""

from __future__ import annotations

import argparse
import json

from wmgym.eval.speed import timed, vector_env_episode


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    results = {}
    for n in args.envs:
        episode, envs = vector_env_episode(n, args.steps, args.checkpoint, args.device)
        core = envs.unwrapped.core
        calibration = core.trust.calibration
        if calibration is None:
            raise SystemExit("this bundle's world model has no trust.json: nothing to measure (`wmgym calibrate-trust`)")

        def set_trust(on: bool):
            core.trust.calibration = calibration if on else None
            if core.imagination is not None:
                core.imagination.track_trust = on

        def run(on: bool):
            set_trust(on)
            episode()  # reset() keeps the imagination; the flag is set again for a fresh one below
            return None

        best = {True: float("inf"), False: float("inf")}
        for _ in range(args.repeats):
            for on in (False, True):
                best[on] = min(best[on], timed(lambda: run(on), 1))
        envs.close()
        off, on = n * args.steps / best[False], n * args.steps / best[True]
        results[n] = {"steps_per_s_trust_off": off, "steps_per_s_trust_on": on, "step_time_overhead": best[True] / best[False] - 1}
        print(f"{n:3d} envs: {off:7.1f} steps/s without trust, {on:7.1f} with; step time +{100 * results[n]['step_time_overhead']:.1f}%")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
