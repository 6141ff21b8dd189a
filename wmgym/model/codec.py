"""Codecs: frames <-> latents, behind one small interface.

Frames inside models are float in [-1, 1], channel-first, (n, 3, H, W); latents are
(n, latent_channels, H / downsample, W / downsample). `wmgym.model.codec_factory.make_codec`
rebuilds a codec from the dict its `config()` returned (saved in a checkpoint's config.json);
weights, if any, are the module's state dict (saved as codec.safetensors).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Codec(nn.Module):
    """Interface: `encode`, `decode`, `latent_channels`, `downsample`, `config()`."""

    latent_channels: int
    downsample: int

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict:
        raise NotImplementedError

    def check_frame_size(self, height: int, width: int) -> None:
        if height % self.downsample or width % self.downsample:
            raise ValueError(f"frames of {height}x{width} do not divide by the codec's downsampling factor {self.downsample}")


class PixelCodec(Codec):
    """Patchify only: `patch` x `patch` pixel blocks become channels (pixel_unshuffle); exact."""

    def __init__(self, patch: int = 1):
        super().__init__()
        if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
            raise ValueError(f"codec patch must be an int >= 1, got {patch!r}")
        self.patch = patch
        self.latent_channels = 3 * patch * patch
        self.downsample = patch

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        self.check_frame_size(frames.shape[-2], frames.shape[-1])
        return F.pixel_unshuffle(frames, self.patch) if self.patch > 1 else frames

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents, self.patch) if self.patch > 1 else latents

    def config(self) -> dict:
        return {"type": "pixel", "patch": self.patch}

