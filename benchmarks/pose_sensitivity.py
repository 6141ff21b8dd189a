"""Does a pose-conditioned world model use the pose? Swap it and watch the imagined frames.

    python benchmarks/pose_sensitivity.py --world-model runs/wm_pose_h100/model --data data/prop1k.zarr --episodes 16 --out pose_sensitivity.json

`wmgym train-wm --pose-conditioning` gives the world model each frame's grippers pose vector
(tool-centre xyz + width per gripper, `POSE_DIM` numbers) beside the grippers view. Whether the
model has learnt to use it is not visible in a validation loss that barely moves. This script
imagines each `--kinds G` episode of `--data` (the planner's proposals: the demonstrator's
sequence plus Gaussian noise) three times from its first frame, with its own actions and
grippers views:
  - `true`: with its own poses (sampler seed s);
  - `reseed`: with its own poses and another sampler seed (what sampling noise alone changes);
  - `swapped`: with the poses of another episode of the same task whose simulated outcome
    differs (seed s), so the only change from `true` is the pose input.
It reports, over the last imagined frame (the one the planner scores):
  - the mean absolute pixel change true -> swapped, next to true -> reseed (a model that
    ignores the pose changes nothing beyond 0 under the same seed);
  - the PSNR of the imagined frame to the simulator's, with the true and with the swapped poses
    (a model that reads the grasp from the pose gets closer to the truth with its own poses);
  - the ROC AUC with which the imagined last frame's distance to the episode's *own* simulated
    last frame beats the distance to the swapped episode's one (0.5: the pose decides nothing
    visible).
`--world-model` may be any checkpoint; for a model that is not pose-conditioned `swapped` equals
`true` and the script says so.

With `--gradient-batches N` it also asks why: the slope of the training loss (`compute_loss`, with
`--gripper-loss-weight` as `train-wm` takes it) toward using the pose, at this model. Over N
random batches of training windows of `--data` it takes the gradient of the pose's columns of
the zero-initialised condition projection, summed over each pose channel's patch columns (the
direction that adds a constant multiple of that channel to every token), and reports its
t-statistic per channel, mean over batches / standard error, RMS over the projection's outputs
(for a model that reads the pose through an embedding, `--pose-input embedding`, the same over
the embedding's zero-initialised last layer). An RMS t near 1 is what batches of pure noise
give: no first-order pull toward the pose. `--placebo` gives each window the poses of another
episode of the same task at the same frames: what task and time alone pull; the pull of the
episode's own pose is what the true poses give beyond it. `--paired` runs every batch with both
poses on the same noise and reports the t-statistics of the difference, own - placebo (RMS and
largest), beside a null from random sign flips of the per-batch differences: the sharper test
of that pull. A model that is not pose-conditioned (e.g. the shipped one) is first given the
pose with zero-initialised weights (`with_pose_conditioning`), which is where `train-wm
--pose-conditioning` starts; `--classifier-features` then starts the embedding's first layer
from a per-frame grasp-outcome classifier fitted on the store. The output's `pose_path_weights`
says how far training has moved the zero-initialised pose path: the RMS of the pose embedding's
last layer, or of the condition projection's pose columns beside its view columns.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wmgym.conditioning import conditions_of_windows, is_pose_conditioned, model_conditions
from wmgym.data.dataset import WindowDataset
from wmgym.data.store import EpisodeStore
from wmgym.image_metrics import psnr as image_psnr
from wmgym.eval.ranking import roc_auc
from wmgym.model.world_model import POSE_DIM, WorldModel
from wmgym.sim.gripper_track import pose_vectors
from wmgym.train.checkpoint import write_text_atomic
from wmgym.train.wm_build import pose_statistics, with_pose_conditioning
from wmgym.train.world_model import TrainWorldModelConfig


def load_episodes(path: str, per_task: int, seed: int) -> list[dict]:
    """`per_task` random `--kinds G` episodes of each task in `path`, half of them successful
    where the store has enough, each with a partner of the same task and the other outcome."""
    store = EpisodeStore.open(path, mode="r")
    meta = store.root["meta"]
    tasks = np.asarray(meta["episode_task_id"][:])
    success = np.asarray(meta["episode_success"][:]).astype(bool)
    rng = np.random.default_rng(seed)
    chosen = []
    for task in np.unique(tasks):
        wins, losses = (rng.permutation(np.flatnonzero((tasks == task) & (success == s))) for s in (True, False))
        k = min(per_task // 2, len(wins), len(losses))
        if k == 0:
            raise ValueError(f"{path}: task {task} needs successful and failed episodes, has {len(wins)} / {len(losses)}")
        chosen += [(int(w), int(l)) for w, l in zip(wins[:k], losses[:k])] + [(int(l), int(w)) for w, l in zip(wins[:k], losses[:k])]
    episodes = []
    for i, partner in chosen:
        ep, other = store.read_episode(i), store.read_episode(partner)
        episodes.append({"index": i, "partner": partner, "task": ep["task"], "success": ep["success"],
                         "frames": ep["frames"], "actions": ep["actions"], "grippers": ep["grippers"],
                         "poses": pose_vectors(ep["eef_pos"], ep["gripper_width"]),
                         "partner_poses": pose_vectors(other["eef_pos"], other["gripper_width"]),
                         "partner_last": other["frames"][-1]})
    return episodes


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-item PSNR (dB) of uint8 images (n, H, W, 3) (`wmgym.image_metrics.psnr`)."""
    return image_psnr(torch.from_numpy(a), torch.from_numpy(b)).double().numpy()


def imagine(model: WorldModel, episodes: list[dict], poses_key: str, seed: int, batch: int) -> np.ndarray:
    """uint8 (n, H, W, 3): the last imagined frame of each episode, with `poses_key`'s poses."""
    out = []
    for lo in range(0, len(episodes), batch):
        chunk = episodes[lo:lo + batch]
        views = np.stack([e["grippers"] for e in chunk])
        poses = np.stack([e[poses_key] for e in chunk]).astype(np.float32)
        generator = torch.Generator(model.device).manual_seed(seed + lo)
        frames = model.rollout(np.stack([e["frames"][:1] for e in chunk]), np.stack([e["actions"] for e in chunk]),
                               generator=generator, conditions=model_conditions(model, views, poses))
        out.append(frames[:, -1].cpu().numpy())
    return np.concatenate(out)


def pose_gradient_tstats(model: WorldModel, data: str, batches: int, batch_size: int, gripper_weight: float,
                         seed: int, window_starts: tuple[int, int] | None = None, placebo: bool = False,
                         pose_input: str = "embedding", classifier_features: bool = False, paired: bool = False) -> dict:
    """t-statistics of the loss gradient on the weights that make the pose's first effect (see
    the module docstring), RMS over them: the pose's columns of the condition projection,
    summed per channel (`pose_input` "channels"), or the last layer of the pose embedding
    ("embedding"); and the views' columns of the projection, summed per channel, beside them.
    On windows of `train-wm`'s default length (only those whose first frame is in the inclusive
    range `window_starts` of their episode, if given). With `placebo`, each window gets the poses
    of a window of another episode of the same task at the same frames: what task and time alone
    give, without the episode's own deviation (the part that decides a grasp). A model that is
    not pose-conditioned is given the pose through `pose_input` first; with `classifier_features`
    (embedding route) its embedding's first layer is then set to that of a one-hidden-layer
    classifier of the episode's success from one frame's pose, fitted here on the same windows'
    episodes, so the zero-initialised last layer starts on features that carry the outcome. With
    `paired`, every batch is also run with the placebo's poses and the same noise, and the
    t-statistics of the difference (own - placebo) are reported beside a sign-flip null."""
    num_actions = TrainWorldModelConfig.num_frames - 1
    dataset = WindowDataset(data, num_actions=num_actions, split="train", views=tuple(model.config.condition_views), poses=True)
    if not model.is_pose_conditioned:
        model = with_pose_conditioning(model, *pose_statistics(dataset), pose_input=pose_input)
    dcfg = model.denoiser.config
    features = None
    if classifier_features:
        if not dcfg.pose_dim:
            raise ValueError("classifier features need the pose embedding (--pose-input embedding)")
        features = fit_pose_features(model, dataset, data, seed)
    patch = dcfg.patch_size ** 2
    view_channels = dcfg.condition_channels - len(model.config.pose_mean)
    offsets = dataset.window_offsets
    candidates = np.arange(len(dataset)) if window_starts is None else \
        np.flatnonzero((offsets >= window_starts[0]) & (offsets <= window_starts[1]))
    if len(candidates) == 0:
        raise ValueError(f"no window of {data} starts at frames {window_starts}")
    window_episode = np.repeat(np.arange(len(dataset.episode_lengths)), dataset.episode_lengths - num_actions)
    task_of_episode = np.asarray(EpisodeStore.open(data, mode="r").root["meta"]["episode_task_id"][:])[dataset.episode_indices]
    window_key = task_of_episode[window_episode] * 1000 + offsets  # same task, same frames
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)

    def gradients(frames, actions, extra, poses) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pose's first-effect weights' gradient and the views' per-channel one, for `poses`."""
        conditions = conditions_of_windows(dataset, extra)
        conditions.vectors["poses"] = torch.as_tensor(poses, dtype=torch.float32)  # these poses, not the window's
        model.denoiser.zero_grad(set_to_none=True)
        loss, _ = model.compute_loss(frames, actions, conditions, generator=generator, gripper_weight=gripper_weight)
        loss.backward()
        projection, views = model.denoiser.condition_in, None
        if projection is not None:  # (width, channels): the direction adding a multiple of a channel to every token
            per_channel = projection.weight.grad.detach().reshape(dcfg.width, -1, patch).sum(-1)
            views = per_channel[:, :view_channels].clone()
        if dcfg.pose_dim:
            return model.denoiser.pose_embed[2].weight.grad.detach().clone(), views  # (width, width)
        return per_channel[:, view_channels:].clone(), views

    pose_grads, view_grads, differences = [], [], []
    model.denoiser.train()
    for _ in tqdm(range(batches), desc="gradients"):
        chosen = rng.choice(candidates, batch_size)
        items = [dataset[int(i)] for i in chosen]
        frames, actions, *extra = (torch.stack(x) for x in zip(*items))
        own = extra[-1]
        if placebo or paired:
            partners = [rng.choice(np.flatnonzero((window_key == window_key[i]) & (window_episode != window_episode[i])))
                        for i in chosen]
            other = torch.stack([dataset[int(j)][-1] for j in partners])
        state = generator.get_state()
        pose_grad, view_grad = gradients(frames, actions, extra, other if placebo else own)
        pose_grads.append(pose_grad)
        if view_grad is not None:
            view_grads.append(view_grad)
        if paired:  # the same windows, noise and timesteps with the placebo's poses
            generator.set_state(state)
            differences.append(pose_grad - gradients(frames, actions, extra, other)[0])
    model.denoiser.eval()

    def t_stats(grads: list) -> torch.Tensor:
        g = torch.stack(grads).double()  # (batches, ...)
        return g.mean(0) / (g.std(0) / len(grads) ** 0.5).clamp_min(1e-30)

    rms = lambda grads: float(t_stats(grads).pow(2).mean().sqrt()) if grads else None
    result = {"batches": batches, "batch_size": batch_size, "gripper_loss_weight": gripper_weight,
              "window_starts": window_starts, "placebo": placebo, "pose_input": "embedding" if dcfg.pose_dim else "channels",
              "classifier_features": features, "pose_rms_t": rms(pose_grads), "view_rms_t": rms(view_grads)}
    if paired:
        # null: the same differences with random signs per batch (no pull of the own pose)
        signs = torch.Generator().manual_seed(seed)
        flipped = [[d * (1 if torch.rand((), generator=signs) < 0.5 else -1) for d in differences] for _ in range(20)]
        result.update(paired_rms_t=rms(differences), paired_max_abs_t=float(t_stats(differences).abs().max()),
                      paired_null_max_abs_t=float(np.mean([t_stats(f).abs().max() for f in flipped])),
                      paired_null_rms_t=float(np.mean([rms(f) for f in flipped])))
    return result


def fit_pose_features(model: WorldModel, dataset: WindowDataset, data: str, seed: int, epochs: int = 40) -> dict:
    """Fit success ~ Linear(SiLU(Linear(standardised pose of one frame))) on every frame of
    `dataset`'s episodes (its train split) and copy the hidden layer into `model`'s pose
    embedding's first layer, in place. Returns the classifier's training AUC per frame index."""
    embed = model.denoiser.pose_embed
    success = np.asarray(EpisodeStore.open(data, mode="r").root["meta"]["episode_success"][:])[dataset.episode_indices]
    labels = torch.tensor(np.repeat(success, dataset.episode_lengths), dtype=torch.float32)
    frame = np.concatenate([np.arange(n) for n in dataset.episode_lengths])
    inputs = ((dataset.poses - model.pose_mean.cpu()) / model.pose_std.cpu()).float()
    torch.manual_seed(seed)
    hidden = torch.nn.Linear(inputs.shape[1], embed[0].out_features)
    head = torch.nn.Linear(embed[0].out_features, 1)
    net = torch.nn.Sequential(hidden, torch.nn.SiLU(), head)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in tqdm(range(epochs), desc="pose classifier"):
        for rows in torch.randperm(len(inputs)).split(512):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(inputs[rows])[:, 0], labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        embed[0].weight.copy_(hidden.weight)
        embed[0].bias.copy_(hidden.bias)
        scores = net(inputs)[:, 0].numpy()
    return {"train_auc_per_frame": [round(roc_auc(scores[frame == f], labels.numpy()[frame == f]), 3)
                                    for f in range(int(frame.max()) + 1)]}


def swap_test(model: WorldModel, data: str, per_task: int, seed: int, batch: int) -> dict:
    """The `true` / `reseed` / `swapped` rollouts of the module docstring and their figures."""
    episodes = load_episodes(data, per_task, seed)
    runs = {}
    for name, key, run_seed in tqdm([("true", "poses", seed), ("reseed", "poses", seed + 10_000),
                                     ("swapped", "partner_poses", seed)], desc="rollouts"):
        runs[name] = imagine(model, episodes, key, run_seed, batch)
    own = np.stack([e["frames"][-1] for e in episodes])
    partner = np.stack([e["partner_last"] for e in episodes])
    change = lambda a, b: float(np.abs(runs[a].astype(np.float64) - runs[b]).mean())
    own_true, own_swapped = psnr(runs["true"], own), psnr(runs["swapped"], own)
    # how much closer to its own outcome than to the partner's each imagined last frame is
    closer_true = own_true - psnr(runs["true"], partner)
    closer_swapped = own_swapped - psnr(runs["swapped"], partner)
    per_task = {}
    for task in sorted({e["task"] for e in episodes}):
        m = np.array([e["task"] == task for e in episodes])
        labels = np.concatenate([np.ones(m.sum(), bool), np.zeros(m.sum(), bool)])
        per_task[task] = {
            "episodes": int(m.sum()),
            "psnr_to_sim_true": float(own_true[m].mean()), "psnr_to_sim_swapped": float(own_swapped[m].mean()),
            "own_outcome_auc": roc_auc(np.concatenate([closer_true[m], closer_swapped[m]]), labels),
        }
    return {
        "episodes": len(episodes),
        "mean_abs_change_true_to_swapped": change("true", "swapped"),
        "mean_abs_change_true_to_reseed": change("true", "reseed"),
        "psnr_to_sim_true": float(own_true.mean()), "psnr_to_sim_swapped": float(own_swapped.mean()),
        "psnr_gain_true_over_swapped": float((own_true - own_swapped).mean()),
        "fraction_closer_with_true_poses": float((own_true > own_swapped).mean()),
        "per_task": per_task,
    }


def pose_path_weights(model: WorldModel) -> dict | None:
    """RMS over the entries of the weights through which the pose first acts (how far training has moved a
    zero-initialised path): the pose embedding's output layer (`--pose-input embedding`), or
    the condition projection's pose columns beside its view columns (`channels`); None for a
    model without the pose."""
    if not model.is_pose_conditioned:
        return None
    denoiser = model.denoiser
    if denoiser.config.pose_dim:
        return {"route": "embedding", "pose_embed_output_rms": float(denoiser.pose_embed[2].weight.detach().pow(2).mean().sqrt())}
    weight = denoiser.condition_in.weight.detach()  # (width, channels * s * s), channel-major (Denoiser._patchify)
    per_channel = denoiser.config.patch_size ** 2
    pose_columns = POSE_DIM * per_channel  # the pose is the last POSE_DIM condition channels
    rms = lambda w: float(w.pow(2).mean().sqrt()) if w.numel() else float("nan")
    return {"route": "channels", "pose_columns_rms": rms(weight[:, -pose_columns:]),
            "view_columns_rms": rms(weight[:, :-pose_columns])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world-model", required=True, help="a world-model directory (config.json + safetensors)")
    parser.add_argument("--data", default="data/prop1k.zarr", help="a `wmgym generate --kinds G` store the model did not train on")
    parser.add_argument("--episodes", type=int, default=16,
                        help="episodes per task for the swap test (half successful, half failed); 0 skips it")
    parser.add_argument("--gradient-batches", type=int, default=0, help="batches for the loss-gradient t-statistics; 0 skips them")
    parser.add_argument("--gripper-loss-weight", type=float, default=0.0, help="as `train-wm`'s, for the gradient")
    parser.add_argument("--window-starts", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                        help="gradient on windows starting at these frames of their episode only (e.g. 2 5: "
                             "those that hold the speed-1 demonstrator's grasp and lift)")
    parser.add_argument("--placebo", action="store_true",
                        help="gradient with each window's poses taken from another episode of the same task at the same frames")
    parser.add_argument("--pose-input", choices=("embedding", "channels"), default="embedding",
                        help="how a model that is not pose-conditioned is given the pose for the gradient (`train-wm --pose-input`)")
    parser.add_argument("--classifier-features", action="store_true",
                        help="(embedding route, a model without the pose) start the pose embedding's first layer "
                             "from a per-frame grasp-outcome classifier fitted here, before the gradient")
    parser.add_argument("--paired", action="store_true",
                        help="also the t-statistics of the gradient difference own - placebo poses on the same batches and noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.episodes < 0 or args.gradient_batches < 0 or args.episodes + args.gradient_batches == 0:
        parser.error("give --episodes > 0, --gradient-batches > 0, or both")
    if args.gradient_batches == 1:
        parser.error("--gradient-batches needs at least 2 batches for a standard error (use 100 or more)")
    if args.episodes % 2:
        parser.error(f"--episodes must be even (half successful, half failed), got {args.episodes}")
    torch.set_num_threads(args.threads)
    started = time.time()
    model = WorldModel.from_pretrained(args.world_model, device="cpu")
    result = {"args": vars(args), "pose_conditioned": is_pose_conditioned(model), "pose_path_weights": pose_path_weights(model)}
    if args.episodes:
        if not is_pose_conditioned(model):
            print(f"{args.world_model} is not pose-conditioned: `swapped` will equal `true`")
        result["swap"] = swap_test(model, args.data, args.episodes, args.seed, args.batch)
    if args.gradient_batches:
        result["gradient"] = pose_gradient_tstats(model, args.data, args.gradient_batches, args.batch,
                                                  args.gripper_loss_weight, args.seed,
                                                  None if args.window_starts is None else tuple(args.window_starts),
                                                  args.placebo, args.pose_input, args.classifier_features, args.paired)
    result["seconds"] = round(time.time() - started, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text + "\n")


if __name__ == "__main__":
    main()
