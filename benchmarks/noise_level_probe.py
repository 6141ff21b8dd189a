"""Probe a world-model run: one-step x0 PSNR of the newest frame per noise level, vs copying.

    python benchmarks/noise_level_probe.py RUN_DIR DATA.zarr

Uses the run's newest checkpoint and 32 evenly spaced held-out windows; history frames sit
at the sampler's history level. Prints latent PSNR (peak 2) per noise level k of the newest
frame, and pixel PSNR of 8-step and 1-step rollouts of the newest frame. A model conditioned on
pixel-aligned views (e.g. the grippers) gets the store's views of the same frames.
"""
import glob
import math
import sys

import numpy as np
import torch
torch.set_num_threads(1)
from wmgym.model.conditions import Conditions
from wmgym.model.world_model import WorldModel
from wmgym.model.schedule import add_noise
from wmgym.data.dataset import WindowDataset
ck = sorted(glob.glob(sys.argv[1] + '/checkpoints/step_*'))[-1]
m = WorldModel.from_pretrained(ck + '/model', device='cpu').eval()
ds = WindowDataset(sys.argv[2], num_actions=4, split='val', views=tuple(m.config.condition_views))
idx = np.linspace(0, len(ds)-1, 32).astype(int)
frames = torch.stack([ds[i][0] for i in idx]); actions = torch.stack([ds[i][1] for i in idx])
views = torch.stack([ds[i][2] for i in idx]) if m.config.condition_views else None  # (b, t, V, H, W, 3) views, if conditioned
conds = None if views is None else Conditions({name: views[:, :, v] for v, name in enumerate(m.config.condition_views)})
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    z = m.encode_frames(frames); b,t = z.shape[:2]
    fa, dr = m._frame_actions(m.normalize_actions(actions), t)
    maps, vectors = m.encode_conditions(conds, b, t)
    target = z[:, -1:]
    copy = ((z[:, -2:-1]-target)**2).mean().item()
    out = [f'{ck.split("/")[-1]} copy {10*math.log10(4/copy):.1f}']
    for k in (999, 750, 500, 250, 100):
        ts = torch.full((b,t), m.sampler.history_timestep); ts[:, -1] = k
        noisy = add_noise(z, torch.randn(z.shape, generator=g), ts, m.alphas_cumprod)
        out_k = m.denoiser(noisy, ts, fa, dr, maps, vectors)[:, -1:]
        x0 = m.predicted_x0(out_k, noisy[:, -1:], ts[:, -1:], z[:, -2:-1])
        out.append(f'k{k} {10*math.log10(4/((x0-target)**2).mean().item()):.1f}')
    r = m.rollout(frames[:, :-1], actions[:, -1:], generator=g, conditions=conds)[:, 0]
    mse = ((r.double()-frames[:, -1].double())**2).mean().item()
    out.append(f'rollout8 {10*math.log10(255**2/mse):.1f}')
    r = m.rollout(frames[:, :-1], actions[:, -1:], num_steps=1, generator=g, conditions=conds)[:, 0]
    mse = ((r.double()-frames[:, -1].double())**2).mean().item()
    out.append(f'rollout1 {10*math.log10(255**2/mse):.1f}')
print(' | '.join(out))
