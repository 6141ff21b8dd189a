"""`AutoencoderKLCodec`: a diffusers `AutoencoderKL` behind the `Codec` interface.

Frames (n, 3, H, W) in [-1, 1] -> latents (n, C, H / f, W / f), f = 2 ** (len(blocks) - 1).
Latents are the posterior mean, normalised as z = (mean - shift_factor) * scaling_factor
(Stable Diffusion's scaling; SD3/Flux's shift), both from the diffusers config; `decode`
inverts that. `wmgym train-codec` measures both on data so latents have ~zero mean and unit
variance, which is what the denoiser's noise schedule assumes.

Checkpoints: `config()` carries the diffusers config (architecture and latent statistics),
the weights are this module's state dict (keys "vae.encoder...", "vae.decoder..."), saved as
safetensors by whoever holds the codec (`WorldModel.save_pretrained`, `wmgym train-codec`).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from wmgym.model.codec import Codec
from wmgym.model.config_checks import is_finite_number

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
SHARDED_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def vae_config_dict(vae: AutoencoderKL) -> dict:
    """The diffusers config as plain JSON types, without diffusers' private "_..." keys."""
    plain = lambda v: [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
    return {k: plain(v) for k, v in vae.config.items() if not k.startswith("_")}


class AutoencoderKLCodec(Codec):
    """Frames <-> latents through a KL autoencoder (deterministic: the posterior mean).

    Shapes: `encode` (n, 3, H, W) in [-1, 1] -> (n, latent_channels, H / downsample,
    W / downsample); `decode` the reverse (outputs are not clamped).

    Attributes:
        vae: the wrapped `diffusers.AutoencoderKL` (training uses its posterior directly).
        latent_channels, downsample: from the diffusers config.
    """

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------ construction
    @classmethod
    def small(cls, latent_channels: int = 4, block_out_channels: tuple[int, ...] = (32, 64, 64),
              layers_per_block: int = 1, norm_num_groups: int = 8,
              use_mid_block_attention: bool = True) -> "AutoencoderKLCodec":
        """A randomly initialised codec sized to train on two CPU cores.

        The default downsamples by 4 (64x64x3 -> 16x16x4, 12x fewer numbers).
        """
        blocks = len(block_out_channels)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block, latent_channels=latent_channels,
            norm_num_groups=norm_num_groups, scaling_factor=1.0, shift_factor=None,
            mid_block_add_attention=use_mid_block_attention)
        return cls(vae)

    @classmethod
    def from_config(cls, config: dict) -> "AutoencoderKLCodec":
        """Rebuild (random weights) from `config()`'s dict, with or without its "type" key."""
        config = dict(config)
        kind = config.pop("type", "autoencoder_kl")
        if kind != "autoencoder_kl" or set(config) != {"vae_config"}:
            raise ValueError(f"an autoencoder_kl codec config is {{'type': 'autoencoder_kl', 'vae_config': {{...}}}}, "
                             f"got type {kind!r} and keys {sorted(config)}")
        if not isinstance(config["vae_config"], dict):
            raise ValueError(f"vae_config must be an object of diffusers.AutoencoderKL arguments, got {config['vae_config']!r}")
        vae_config = {k: v for k, v in config["vae_config"].items() if not k.startswith("_")}
        known = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
        unknown = sorted(set(vae_config) - known)
        if unknown:
            raise ValueError(f"vae_config has keys {unknown} that diffusers.AutoencoderKL does not take; "
                             f"expected a subset of {sorted(known)}")
        # The latent statistics divide and shift every latent: NaN or 0 would decode to black frames.
        scaling, shift = vae_config.get("scaling_factor", 1.0), vae_config.get("shift_factor")
        if not (is_finite_number(scaling) and scaling > 0):
            raise ValueError(f"vae_config.scaling_factor must be a finite number > 0 (latents are divided by it), got {scaling!r}")
        if shift is not None and not is_finite_number(shift):
            raise ValueError(f"vae_config.shift_factor must be a finite number or null, got {shift!r}")
        try:
            vae = AutoencoderKL(**vae_config)
        except (TypeError, ValueError) as error:  # a wrong type deep in diffusers' constructor
            raise ValueError(f"vae_config does not build an AutoencoderKL: {error}".splitlines()[0]) from None
        return cls(vae)

    @classmethod
    def from_local_pretrained(cls, directory: str | os.PathLike) -> "AutoencoderKLCodec":
        """Adapt an outside `AutoencoderKL` written by diffusers' `save_pretrained`.

        `directory` is the VAE's own folder (a pipeline's `vae/` subfolder), local only, holding
        config.json and diffusion_pytorch_model.safetensors; pickled weights (.bin) are refused.
        Its scaling_factor and shift_factor are kept as the checkpoint sets them.
        """
        directory = Path(directory)
        expected = f"config.json and {WEIGHTS_NAME} (written by AutoencoderKL.save_pretrained)"
        if not directory.is_dir():
            raise FileNotFoundError(f"no AutoencoderKL directory at {directory}; expected a local folder with {expected}")
        has_weights = (directory / WEIGHTS_NAME).is_file() or (directory / SHARDED_INDEX_NAME).is_file()
        if not has_weights:
            pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise ValueError(f"{directory} holds only pickled weights {pickles}; wmgym loads safetensors only "
                                 f"(convert with AutoencoderKL.from_pretrained(...).save_pretrained(..., safe_serialization=True))")
        if not has_weights or not (directory / "config.json").is_file():
            found = sorted(p.name for p in directory.iterdir())
            hint = " (a pipeline? pass its vae/ subfolder)" if (directory / "vae").is_dir() else ""
            raise FileNotFoundError(f"{directory} lacks {expected}; found {found}{hint}")
        vae = AutoencoderKL.from_pretrained(directory, local_files_only=True, use_safetensors=True)
        return cls(vae.float().eval())

    # ------------------------------------------------------------ latent statistics
    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        shift = self.vae.config.shift_factor
        return 0.0 if shift is None else float(shift)

    def set_latent_statistics(self, scaling_factor: float, shift_factor: float | None) -> None:
        """Store the normalisation in the diffusers config (so `config()` carries it)."""
        if not scaling_factor > 0:
            raise ValueError(f"scaling_factor must be positive, got {scaling_factor}")
        self.vae.register_to_config(scaling_factor=float(scaling_factor),
                                    shift_factor=None if shift_factor is None else float(shift_factor))

    # ------------------------------------------------------------ Codec interface
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [-1, 1] -> normalised posterior means (n, C, H / f, W / f)."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (n, 3, H, W) in [-1, 1], got {tuple(frames.shape)}")
        self.check_frame_size(frames.shape[-2], frames.shape[-1])
        mean = self.vae.encode(frames).latent_dist.mode()  # (n, C, h, w)
        return (mean - self.shift_factor) * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (n, C, h, w) -> frames (n, 3, h * f, w * f), roughly in [-1, 1]."""
        if latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (n, {self.latent_channels}, h, w), got {tuple(latents.shape)}")
        return self.vae.decode(latents / self.scaling_factor + self.shift_factor).sample

    def config(self) -> dict:
        return {"type": "autoencoder_kl", "vae_config": vae_config_dict(self.vae)}
