"""`wmgym eval-lam`: latent action models on held-out episodes (FLAM against the monolithic baseline).

For every model, on the store's val split (the episodes no model trained on):
1. **Rollouts**: clips of horizon + 1 true frames (every episode from frame 0, and from its
   last possible start when that differs); the model infers the latent actions of the whole
   clip, then rolls out from the first frame driven by them (`LatentActionModel.reconstruct`,
   autoregressive: each predicted frame is encoded again). PSNR, SSIM and LPIPS per step against
   the true frames, and the copy-first-frame baseline.
2. **Probe** (`wmgym.eval.lam_probe`): each transition's latent action per slot (posterior
   mean, clips of horizon + 1 frames as in training) against the true action: ridge probes
   fitted on `probe_episodes` train-split episodes, scored on the held-out ones. For a
   simulator store the entities are the two grippers, each read as its position deltas and
   width ("pos_width", the issue's target), its position deltas alone ("position"), its width
   alone ("width") and its whole 10-D action ("full"); for a robot
   store, one entity, its whole action vector.
3. **Counterfactual edit** (simulator stores, K >= 2): for pairs (i, j) of held-out episodes,
   slot k's latent actions of episode i are replaced by episode j's and the rollout from i's
   first frame is redone. The change |edited - original| (0-255) is measured in the region
   of the gripper matched to slot k (discs of `REGION_RADIUS` px around where that gripper is
   in i and j, projected with the simulator's camera) and in the other gripper's region (where
   it is in i), each without the other: a factored edit changes the first and leaves the second.
   The gripper poses only measure; no model reads them.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wmgym.eval.lam_config import EvalLAMConfig
from wmgym.eval.lam_probe import factorisation_scores, probe_matrix
from wmgym.outputs import OutputKind, check_output, replace_directory, temporary_directory_beside

LAM_REPORT = OutputKind("eval-lam report", ("metrics.json",))
REGION_RADIUS = 6.0  # pixels around a gripper's projected tool centre (64x64 frames)
GRIPPER_ENTITIES = {"pos_width": {"left": [0, 1, 2, 9], "right": [10, 11, 12, 19]},
                    "position": {"left": [0, 1, 2], "right": [10, 11, 12]}, "width": {"left": [9], "right": [19]},
                    "full": {"left": list(range(10)), "right": list(range(10, 20))}}


def evaluate_lam(config: EvalLAMConfig) -> Path:
    """Run the evaluation of `config` (see the module docstring); returns the output directory."""
    from wmgym.data.dataset import split_episodes
    from wmgym.data.store import EpisodeStore
    from wmgym.model.lam import LatentActionModel

    _check_config(config)
    out = Path(config.out)
    check_output(out, LAM_REPORT, config.overwrite)
    store = EpisodeStore.open(config.data)
    held = split_episodes(store.num_episodes, "val", config.val_fraction)[: config.episodes]
    fit = split_episodes(store.num_episodes, "train", config.val_fraction)[: config.probe_episodes]
    if len(held) == 0 or len(fit) == 0:
        raise ValueError(f"{config.data}: need held-out and train episodes (val_fraction {config.val_fraction})")
    paths = {_name(path): Path(path) for path in config.lam}
    models = {name: LatentActionModel.from_pretrained(path, device=config.device) for name, path in paths.items()}
    for name, model in models.items():
        if (model.config.height, model.config.width) != (store.height, store.width):
            raise ValueError(f"{name} reads {model.config.height}x{model.config.width} frames, {config.data} holds "
                             f"{store.height}x{store.width}")
        if config.horizon + 1 > model.config.max_frames:
            raise ValueError(f"horizon {config.horizon} is longer than {name} allows ({model.config.max_frames - 1})")
    began = time.perf_counter()
    held_eps, fit_eps = _read(store, held), _read(store, fit)
    clips = _clips(held_eps["frames"], config.horizon)  # (N, H + 1, h, w, 3) uint8
    entities = GRIPPER_ENTITIES if not store.is_robot else {"full": {"arm": list(range(held_eps["actions"][0].shape[1]))}}
    metrics: dict = {"data": str(config.data), "held_out_episodes": len(held), "probe_fit_episodes": len(fit),
                     "rollout_clips": len(clips), "horizon": config.horizon,
                     "command": "wmgym eval-lam " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["eval-lam"] else None,
                     "models": {}}
    from wmgym.eval.common import lpips_head

    lpips = lpips_head(config.lpips_fallback, config.device)
    metrics["lpips_pretrained"] = lpips.is_pretrained
    truth = torch.from_numpy(clips)
    metrics["copy_first"] = _frame_metrics(truth[:, :1].expand(-1, config.horizon, -1, -1, -1).contiguous(), truth[:, 1:], lpips)
    tmp = temporary_directory_beside(out, "eval-lam report")
    rollouts, pictures = {}, {}
    for name, model in models.items():
        predicted, masks = _rollouts(model, clips, config.batch_size, config.show_progress, name)
        rollouts[name] = predicted
        entry = {"slots": model.config.slots, "latent_dim": model.config.latent_dim,
                 "parameters": sum(p.numel() for p in model.parameters()), **_train_facts(paths[name]),
                 "rollout": _frame_metrics(torch.from_numpy(predicted), truth[:, 1:], lpips)}
        latents_fit = episode_latents(model, fit_eps["frames"], config.horizon + 1, config.batch_size)
        latents_held = episode_latents(model, held_eps["frames"], config.horizon + 1, config.batch_size)
        entry["probe"] = {}
        for kind, groups in entities.items():
            r2 = probe_matrix(latents_fit, np.concatenate(fit_eps["actions"]), latents_held,
                              np.concatenate(held_eps["actions"]), groups)
            entry["probe"][kind] = {"entities": list(groups), "r2": r2.round(4).tolist(), **factorisation_scores(r2)}
        if not store.is_robot and model.config.slots >= 2:
            matched = entry["probe"]["pos_width"]["matched_slot"]
            entry["counterfactual"], pictures[name] = _counterfactual(model, held_eps, matched, config, store.height, store.width)
        metrics["models"][name] = entry
        if model.config.slots >= 2:
            _write_masks(tmp / f"masks_{name}.png", clips[:4], masks[:4], name)
    metrics["seconds"] = round(time.perf_counter() - began, 1)
    _write_rollouts(tmp / "rollouts.png", clips[:: max(1, len(clips) // 4)][:4], {n: r[:: max(1, len(clips) // 4)][:4] for n, r in rollouts.items()})
    _plot_by_step(tmp / "psnr_by_step.png", metrics)
    _plot_probes(tmp / "probe_r2.png", metrics)
    for name, picture in pictures.items():
        _write_counterfactual(tmp / f"counterfactual_{name}.png", *picture)
    (tmp / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2))
    (tmp / "report.md").write_text(_report(metrics))
    replace_directory(tmp, out)
    print(_report(metrics))
    return out


# ------------------------------------------------------------------------------------------------- data


def _name(path: str) -> str:
    return Path(path).resolve().name


def _train_facts(path: Path) -> dict:
    """Steps and seconds of a run, from its train_config.json and log.jsonl (when present)."""
    facts = {}
    if (path / "train_config.json").is_file():
        saved = json.loads((path / "train_config.json").read_text())
        facts.update({k: saved.get(k) for k in ("steps", "beta", "batch_size", "num_frames")})
    if (path / "log.jsonl").is_file():
        lines = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines() if line.strip()]
        seconds = [entry["seconds"] for entry in lines if "seconds" in entry]
        facts["train_seconds"] = seconds[-1] if seconds else None
    return facts


def _read(store, indices: np.ndarray) -> dict:
    """Episodes' frames, actions and (simulator stores) tool-centre positions, one list entry per episode."""
    from wmgym.data.store_layout import CAMERA_KEY

    names = [CAMERA_KEY, "action"] + ([] if store.is_robot else ["robot0_eef_pos", "robot1_eef_pos"])
    rows, lengths = store.read_frames(indices, names)
    cuts = np.cumsum(lengths)[:-1]
    split = lambda x: np.split(x, cuts)
    out = {"frames": split(rows[CAMERA_KEY]), "actions": [a[:-1] for a in split(rows["action"])]}  # the last row is padding
    if not store.is_robot:
        out["positions"] = split(np.stack([rows["robot0_eef_pos"], rows["robot1_eef_pos"]], 1))  # (L, 2, 3) each
    return out


def _clips(frames: list[np.ndarray], horizon: int) -> np.ndarray:
    """Clips of horizon + 1 frames: from frame 0 and from the last start of every episode long enough."""
    clips = []
    for episode in frames:
        for start in sorted({0, len(episode) - horizon - 1}):
            if start >= 0 and len(episode) >= horizon + 1:
                clips.append(episode[start: start + horizon + 1])
    if not clips:
        raise ValueError(f"no held-out episode has {horizon + 1} frames; pass a smaller --horizon")
    return np.stack(clips)


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return ((frames.float().clamp(-1, 1) + 1.0) * 127.5).round().byte().movedim(-3, -1).cpu().numpy()


def _rollouts(model, clips: np.ndarray, batch_size: int, show_progress: bool, name: str) -> tuple[np.ndarray, np.ndarray]:
    """-> predicted frames (N, H, h, w, 3) uint8 and the slot masks of the true clips (N, H + 1, K, gh, gw)."""
    predicted, masks = [], []
    for start in tqdm(range(0, len(clips), batch_size), desc=f"rollouts {name}", disable=not show_progress):
        frames = model.to_input(torch.from_numpy(clips[start: start + batch_size]).to(next(model.parameters()).device))
        out = model.reconstruct(frames)
        predicted.append(_to_uint8(out["frames"][:, 1:]))
        masks.append(out["masks"].cpu().numpy())
    return np.concatenate(predicted), np.concatenate(masks)


@torch.no_grad()
def episode_latents(model, frames: list[np.ndarray], window: int, batch_size: int, show_progress: bool = False,
                    with_states: bool = False):
    """Posterior-mean latent action of every transition of every episode, inferred in windows of
    `window` frames as in training: transitions 0..window-2 from the window at 0, later ones
    from the window ending at the episode's end. -> (sum of (L - 1), K, D / K); with `with_states`,
    also each transition's slot states at t and t+1, (sum of (L - 1), K, 2 S)."""
    device = next(model.parameters()).device
    jobs = []  # (episode, start, first transition kept (in the window), length)
    for i, episode in enumerate(frames):
        length = len(episode)
        if length <= window:
            jobs.append((i, 0, 0, length))
        else:
            jobs.append((i, 0, 0, window))
            jobs.append((i, length - window, window - 1 - (length - window), window))
    results: dict[int, list] = {i: [] for i in range(len(frames))}
    by_length: dict[int, list] = {}
    for job in jobs:
        by_length.setdefault(job[3], []).append(job)
    bar = tqdm(total=len(jobs), desc="latent actions", unit="clip", disable=not show_progress)
    for length, group in by_length.items():
        for start in range(0, len(group), batch_size):
            part = group[start: start + batch_size]
            batch = torch.from_numpy(np.stack([frames[i][s: s + length] for i, s, _, _ in part])).to(device)
            inferred = model.infer_latents(model.to_input(batch))
            values = inferred["mean"]
            if with_states:
                values = torch.cat([values, inferred["states"][:, :-1], inferred["states"][:, 1:]], -1)
            for (i, s, keep, _), value in zip(part, values.cpu().numpy()):
                results[i].append((s + keep, value[keep:]))
            bar.update(len(part))
    bar.close()
    values = np.concatenate([np.concatenate([m for _, m in sorted(results[i], key=lambda r: r[0])]) for i in range(len(frames))])
    d = model.config.slot_latent_dim
    return (values[..., :d], values[..., d:]) if with_states else values


def _frame_metrics(predicted: torch.Tensor, target: torch.Tensor, lpips) -> dict:
    """PSNR / SSIM / LPIPS of predicted vs target frames (N, H, h, w, 3) uint8: by step and means."""
    from wmgym.eval.common import lpips_by_step
    from wmgym.image_metrics import psnr, ssim

    by_step = {"psnr": psnr(predicted, target), "ssim": ssim(predicted, target), "lpips": lpips_by_step(lpips, predicted, target)}
    out = {}
    for key, values in by_step.items():
        values = values.float().cpu()
        out[f"{key}_mean"] = round(float(values.mean()), 4)
        out[f"{key}_last"] = round(float(values[:, -1].mean()), 4)
        out[f"{key}_by_step"] = [round(float(v), 4) for v in values.mean(0)]
    return out


# ------------------------------------------------------------------------------------------------- counterfactual


def _regions(positions: np.ndarray, height: int, width: int) -> np.ndarray:
    """Tool-centre positions (L, 2, 3) -> (2, h, w) bool: pixels within REGION_RADIUS of where each gripper is at some frame."""
    from wmgym.sim.camera import FisheyeCamera
    from wmgym.sim.world import WorldConfig

    scene = WorldConfig(height=height, width=width)
    camera = FisheyeCamera(height, width, scene.camera_position, scene.camera_look_at, fov_deg=scene.camera_fov_deg)
    uv, _ = camera.project(positions.reshape(-1, 3))
    uv = uv.reshape(len(positions), 2, 2)
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    masks = np.zeros((2, height, width), bool)
    for g in range(2):
        for u, v in uv[:, g]:
            masks[g] |= (cols - u) ** 2 + (rows - v) ** 2 <= REGION_RADIUS ** 2
    return masks


def _counterfactual(model, episodes: dict, matched: list[int], config: EvalLAMConfig, height: int, width: int):
    """Swap each matched slot's latents with another episode's; -> (metrics, picture of the pair whose left edit changed most)."""
    device = next(model.parameters()).device
    n = len(episodes["frames"])
    rng = np.random.default_rng(config.seed)
    count = min(config.counterfactual_pairs, n * (n - 1))
    pairs = []
    while len(pairs) < count and n >= 2:
        i, j = rng.choice(n, 2, replace=False)
        pairs.append((int(i), int(j)))
    length = config.horizon + 1
    if not pairs or min(len(f) for f in episodes["frames"]) < length:
        return {"pairs": 0}, None
    clip = lambda i: torch.from_numpy(episodes["frames"][i][:length]).to(device)
    changes = {g: {"own": [], "other": []} for g in range(2)}
    picture, best = None, 0.0
    for i, j in pairs:
        frames = model.to_input(torch.stack([clip(i), clip(j)]))
        latents = model.infer_latents(frames)["mean"]  # (2, H, K, d)
        original = model.rollout(frames[:1, 0], latents[:1])["frames"]
        regions_i = _regions(episodes["positions"][i][:length], height, width)
        regions_j = _regions(episodes["positions"][j][:length], height, width)
        for g, slot in enumerate(matched):
            edited_latents = latents[:1].clone()
            edited_latents[:, :, slot] = latents[1:, :, slot]
            edited = model.rollout(frames[:1, 0], edited_latents)["frames"]
            change = np.abs(_to_uint8(edited[0, 1:]).astype(np.float32) - _to_uint8(original[0, 1:]).astype(np.float32)).mean((0, 3))
            own = (regions_i[g] | regions_j[g]) & ~regions_i[1 - g]
            other = regions_i[1 - g] & ~(regions_i[g] | regions_j[g])
            if own.any() and other.any():
                changes[g]["own"].append(float(change[own].mean()))
                changes[g]["other"].append(float(change[other].mean()))
            if g == 0 and own.any() and (picture is None or change[own].mean() > best):  # show the clearest left edit
                best = float(change[own].mean())
                picture = (_to_uint8(frames[0]), _to_uint8(frames[1]), _to_uint8(original[0]), _to_uint8(edited[0]), own, other, slot)
    result = {"pairs": len(pairs), "region_radius_px": REGION_RADIUS}
    for g, name in enumerate(("left", "right")):
        own, other = np.mean(changes[g]["own"] or [np.nan]), np.mean(changes[g]["other"] or [np.nan])
        result[name] = {"slot": int(matched[g]), "change_in_own_region": round(float(own), 3),
                        "change_in_other_region": round(float(other), 3), "ratio": round(float(own / max(other, 1e-6)), 2),
                        "pairs_measured": len(changes[g]["own"])}
    return result, picture


# ------------------------------------------------------------------------------------------------- pictures and report


def _tile(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Rows of frames (each (T, h, w, 3)) -> one uint8 image, white gaps."""
    t, h, w = max(len(r) for r in rows), rows[0].shape[1], rows[0].shape[2]
    canvas = np.full((len(rows) * (h + gap) - gap, t * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, frame in enumerate(row):
            canvas[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = frame
    return canvas


def _labelled(path: Path, image: np.ndarray, labels: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(image.shape[1] / 70 + 1.4, image.shape[0] / 70 + 0.5), dpi=100)  # ~1.4 px per pixel
    ax.imshow(image, interpolation="nearest")
    step = image.shape[0] / len(labels)
    ax.set_yticks([step * (i + 0.5) for i in range(len(labels))], labels, fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_rollouts(path: Path, clips: np.ndarray, rollouts: dict[str, np.ndarray]) -> None:
    """Each clip: the true frames over every model's rollout, every other step."""
    rows, labels = [], []
    for c in range(len(clips)):
        rows.append(clips[c][::2])
        labels.append("true")
        for name, predicted in rollouts.items():
            rows.append(np.concatenate([clips[c][:1], predicted[c]])[::2])
            labels.append(name)
    _labelled(path, _tile(rows), labels, "rollouts from inferred latent actions (every 2nd step)")


def _write_masks(path: Path, clips: np.ndarray, masks: np.ndarray, name: str) -> None:
    """Slot masks (argmax slot, coloured, over the frame) at every other frame of a few clips."""
    colours = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240]], np.float32)
    rows = []
    for clip, mask in zip(clips, masks):
        h, w = clip.shape[1:3]
        owner = mask.argmax(1)  # (T, gh, gw)
        scale = h // owner.shape[1]
        up = owner.repeat(scale, 1).repeat(scale, 2)  # (T, h, w)
        overlay = (0.5 * clip + 0.5 * colours[up % len(colours)]).astype(np.uint8)
        rows += [clip[::2], overlay[::2]]
    _labelled(path, _tile(rows), ["frame", "slots"] * len(clips), f"{name}: which slot owns each place")


def _write_counterfactual(path: Path, original, donor, rolled, edited, own, other, slot) -> None:
    change = np.abs(edited.astype(np.float32) - rolled.astype(np.float32)).mean(-1, keepdims=True)
    heat = np.clip(change * 4, 0, 255).repeat(3, -1).astype(np.uint8)
    heat[:, own] = np.maximum(heat[:, own], np.array([0, 90, 0], np.uint8))
    heat[:, other] = np.maximum(heat[:, other], np.array([0, 0, 90], np.uint8))
    _labelled(path, _tile([original[::2], donor[::2], rolled[::2], edited[::2], heat[::2]]),
              ["episode i", "episode j", "i's latents", f"slot {slot} from j", "|change| x4"],
              f"counterfactual: slot {slot} (left gripper, green) swapped; right gripper's region blue")


def _plot_by_step(path: Path, metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wmgym.eval.common import finish_plot

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = np.arange(1, metrics["horizon"] + 1)
    for name, entry in metrics["models"].items():
        ax.plot(steps, entry["rollout"]["psnr_by_step"], marker="o", ms=3, label=f"{name} (K={entry['slots']})")
    ax.plot(steps, metrics["copy_first"]["psnr_by_step"], "k--", label="copy first frame")
    ax.set_xlabel("rollout step")
    ax.set_ylabel("PSNR (dB)")
    finish_plot(fig, ax, path)


def _plot_probes(path: Path, metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = list(metrics["models"].items())
    kind = "pos_width" if "pos_width" in entries[0][1]["probe"] else "full"
    fig, axes = plt.subplots(1, len(entries), figsize=(2.2 * len(entries) + 0.5, 2.6), squeeze=False)
    for ax, (name, entry) in zip(axes[0], entries):
        r2 = np.array(entry["probe"][kind]["r2"])
        ax.imshow(np.clip(r2, 0, 1), vmin=0, vmax=1, cmap="viridis")
        for (k, g), value in np.ndenumerate(r2):
            ax.text(g, k, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.6 else "k", fontsize=8)
        ax.set_xticks(range(r2.shape[1]), entry["probe"][kind]["entities"], fontsize=7)
        ax.set_yticks(range(r2.shape[0]), [f"slot {k}" for k in range(r2.shape[0])], fontsize=7)
        ax.set_title(f"{name}\nfactorisation {entry['probe'][kind]['factorisation']:.2f}", fontsize=8)
    fig.suptitle(f"probe R² ({kind}), held-out episodes", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _report(m: dict) -> str:
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = [f"# eval-lam: {m['data']}", "", f"{m['held_out_episodes']} held-out episodes, {m['rollout_clips']} clips of "
             f"{m['horizon']} steps; probes fitted on {m['probe_fit_episodes']} train-split episodes.", "",
             "| model | K | D | PSNR | SSIM | LPIPS | PSNR at last step | own R² | cross R² | factorisation | DCI |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| copy first frame | | | {fmt(m['copy_first']['psnr_mean'])} | {fmt(m['copy_first']['ssim_mean'])} | "
             f"{fmt(m['copy_first']['lpips_mean'])} | {fmt(m['copy_first']['psnr_last'])} | | | | |"]
    for name, e in m["models"].items():
        probe = e["probe"].get("pos_width") or e["probe"]["full"]
        lines.append(f"| {name} | {e['slots']} | {e['latent_dim']} | {fmt(e['rollout']['psnr_mean'])} | {fmt(e['rollout']['ssim_mean'])} | "
                     f"{fmt(e['rollout']['lpips_mean'])} | {fmt(e['rollout']['psnr_last'])} | "
                     f"{' / '.join(f'{v:.2f}' for v in probe['own_r2'])} | {' / '.join(f'{v:.2f}' for v in probe['cross_r2'])} | "
                     f"{fmt(probe['factorisation'])} | {fmt(probe['dci_disentanglement'])} |")
    edits = [(n, e["counterfactual"]) for n, e in m["models"].items() if e.get("counterfactual", {}).get("pairs")]
    if edits:
        lines += ["", "Counterfactual edit (mean |change| 0-255 in the swapped slot's gripper region / the other gripper's region):", ""]
        for name, c in edits:
            lines.append(f"- {name}: left slot {c['left']['slot']}: {c['left']['change_in_own_region']} / "
                         f"{c['left']['change_in_other_region']} (x{c['left']['ratio']}); right slot {c['right']['slot']}: "
                         f"{c['right']['change_in_own_region']} / {c['right']['change_in_other_region']} (x{c['right']['ratio']}), {c['pairs']} pairs")
    if not m["lpips_pretrained"]:
        lines += ["", "LPIPS uses the offline fallback trunk (no pretrained weights here)."]
    return "\n".join(lines) + "\n"


def _finite(value):
    """The metrics with every nan as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _check_config(config: EvalLAMConfig) -> None:
    if not config.lam:
        raise ValueError("pass at least one --lam model directory")
    if len({_name(p) for p in config.lam}) != len(config.lam):
        raise ValueError(f"--lam directories must have distinct names (they label the report), got {list(config.lam)}")
    for name in ("horizon", "probe_episodes", "batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.episodes is not None and config.episodes < 1:
        raise ValueError(f"episodes must be at least 1 (or None), got {config.episodes}")
    if config.counterfactual_pairs < 0:
        raise ValueError(f"counterfactual_pairs must be >= 0, got {config.counterfactual_pairs}")
    if not 0.0 < config.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {config.val_fraction}")
    if not Path(config.data).exists():
        raise FileNotFoundError(f"no episode store at {config.data}")
