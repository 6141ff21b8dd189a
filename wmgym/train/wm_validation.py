"""Validation of a world model during training: the loss on held-out windows, the newest frame
predicted in one step from pure noise, copying the last frame (the baseline to beat), and the
full sampler's newest frame."""

from __future__ import annotations

import torch

from wmgym.image_metrics import psnr_from_mse
from wmgym.model.conditions import Conditions
from wmgym.model.schedule import add_noise
from wmgym.model.world_model import WorldModel


@torch.no_grad()
def validation_metrics(model: WorldModel, loader, seed: int, action_dropout: float) -> dict:
    """Validation metrics of `model` over `loader`'s `wmgym.data.batch.WindowBatch`es.

    val/loss: the training loss with a fixed generator. val/x0_psnr: the newest frame predicted
    in one step from pure noise, the history held at the sampler's noise level, as rollouts do.
    val/copy_last_psnr: the last history frame copied forward -- a model that does not beat it
    has not learned dynamics (docs/design.md, "Validation against copying"). val/rollout_psnr:
    the newest frame from the full sampler. PSNRs are of the mean squared error over all frames
    (0-255 scale).
    """
    generator = torch.Generator(device=model.device).manual_seed(seed)
    sums = torch.zeros(5, dtype=torch.float64)  # loss, x0 se, copy se, rollout se, batches
    count = 0
    for batch in loader:
        batch = batch.to(model.device)
        frames, actions, conditions = batch.frames, batch.actions, batch.conditions
        loss, _ = model.compute_loss(frames, actions, conditions, action_dropout=action_dropout, generator=generator)
        target = frames[:, -1].double()
        predicted = one_step_from_noise(model, frames, actions, generator, conditions)
        rolled = model.rollout(frames[:, :-1], actions[:, -1:], generator=generator, conditions=conditions)[:, 0]
        errors = [((x.double() - target) ** 2).sum().item() for x in (predicted, frames[:, -2], rolled)]
        sums += torch.tensor([float(loss), *errors, 1.0], dtype=torch.float64)
        count += target.numel()
    psnr = lambda se: float(psnr_from_mse(torch.tensor(se / count, dtype=torch.float64)))
    return {"val/loss": float(sums[0] / sums[4]), "val/x0_psnr": psnr(sums[1].item()),
            "val/copy_last_psnr": psnr(sums[2].item()), "val/rollout_psnr": psnr(sums[3].item())}


def one_step_from_noise(model: WorldModel, frames, actions, generator, conditions: Conditions | None = None) -> torch.Tensor:
    """The last frame of each window (uint8 (b, H, W, 3)) predicted in one denoiser call from pure noise.

    conditions: the window's `Conditions` (b, t), if the model has any."""
    z = model.encode_frames(frames)  # (b, t, C, h, w)
    b, t = z.shape[:2]
    last = model.config.num_train_timesteps - 1
    timesteps = torch.full((b, t), model.sampler.history_timestep, dtype=torch.long, device=model.device)
    timesteps[:, -1] = last
    noisy = add_noise(z, torch.randn(z.shape, device=model.device, generator=generator), timesteps, model.alphas_cumprod)
    frame_actions = torch.zeros(b, t, model.action_dim, device=model.device)  # frame i is produced by a_{i-1}
    frame_actions[:, 1:] = model.normalize_actions(actions)
    dropped = torch.zeros(b, t, dtype=torch.bool, device=model.device)
    dropped[:, 0] = True  # frame 0's action is unknown
    maps, vectors = model.encode_conditions(conditions, b, t)
    output = model.denoiser(noisy, timesteps, frame_actions, dropped, maps, vectors)[:, -1:]  # (b, 1, C, h, w)
    x0 = model.predicted_x0(output, noisy[:, -1:], timesteps[:, -1:], z[:, -2:-1])  # the clean predecessor anchors a residual
    return model.decode_latents(x0)[:, 0]
