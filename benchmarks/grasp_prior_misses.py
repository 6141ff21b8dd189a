"""Where does the grasp prior draw a grasp the simulator missed? Per store and episode kind.

    python benchmarks/grasp_prior_misses.py data/judge_replay.zarr data/judge_prop.zarr data/judge2k.zarr

A held-conditioned world model (stage 5) in `WMFold-v0` gets the grasp state from its grasp
prior: each closing of a gripper is drawn held with the prior's p(held) from the grippers'
poses. For every closing in a simulated store (which records the truth,
`robot{0,1}_held_particles`), this prints the mean p(held) over the closings the simulator
missed (the share of them imagination turns into grasps) and over those it held, by episode
kind. Seconds per thousand episodes on one core.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np


def closing_probabilities(prior, store) -> dict[str, dict[str, list[float]]]:
    """{kind: {"missed": [p(held)], "held": [p(held)]}} over every closing of every episode.

    A closing counts as held when the simulator's gripper holds cloth on any of its frames."""
    from wmgym.model.grasp_prior import WIDTH_COLUMNS, close_events
    from wmgym.sim.gripper_track import pose_vectors

    if not store.has_held_particles:
        raise ValueError("the store does not record the grasp state (robot{0,1}_held_particles): regenerate it")
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"missed": [], "held": []})
    for i in range(store.num_episodes):
        record = store.read_record(i)
        poses = pose_vectors(record.eef_pos, record.gripper_width)  # (T+1, 8)
        p = prior.frame_held(poses[None])[0].numpy()  # (T+1, 2)
        for hand, first, stop in close_events(poses[:, WIDTH_COLUMNS]):
            held = bool((record.held_particles[first:stop, hand] > 0).any())
            out[record.spec.kind]["held" if held else "missed"].append(float(p[first, hand]))
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+", help="`wmgym generate` stores (simulated, with the grasp state)")
    parser.add_argument("--checkpoint", default="default", help="bundle whose world model's grasp prior is measured")
    args = parser.parse_args()

    from wmgym.data.store import EpisodeStore
    from wmgym.envs.bundle import Bundle
    from wmgym.model.world_model import WorldModel

    model = WorldModel.from_pretrained(Bundle.load(args.checkpoint).world_model_dir, device="cpu")
    if model.grasp_prior is None:
        raise SystemExit(f"{args.checkpoint}'s world model has no grasp prior")
    mean = lambda v: f"{np.mean(v):.3f}" if v else "-"
    print("| store | episode kind | closings | simulator missed | mean p(held) on missed | simulator held | mean p(held) on held |")
    print("|---|---|---|---|---|---|---|")
    for path in args.stores:
        for kind, p in sorted(closing_probabilities(model.grasp_prior, EpisodeStore.open(path)).items()):
            missed, held = p["missed"], p["held"]
            print(f"| {path} | {kind} | {len(missed) + len(held)} | {len(missed)} | {mean(missed)} | {len(held)} | {mean(held)} |")


if __name__ == "__main__":
    main()
