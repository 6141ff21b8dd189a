"""Image metrics of uint8 frames on the 0-255 scale: PSNR and SSIM, the one definition every
figure uses (`wmgym eval`, the codec's and the world model's validation, `wmgym play`).

PSNR is capped at 100 dB (the mean squared error is floored at 255^2 * 1e-10), so identical
images give a finite number.
"""

from __future__ import annotations

import torch

PEAK = 255.0


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of mean squared errors on the 0-255 scale (any shape, elementwise)."""
    return 10 * torch.log10(PEAK**2 / mse.clamp_min(PEAK**2 * 1e-10))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of uint8 images (..., H, W, 3) -> (...), capped at 100 dB for identical images."""
    return psnr_from_mse((a.float() - b.float()).pow(2).mean(dim=(-3, -2, -1)))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian window 11, sigma 1.5; torchmetrics) of uint8 images (..., H, W, 3) -> (...)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    lead = a.shape[:-3]
    to = lambda x: x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    values = structural_similarity_index_measure(to(a), to(b), data_range=1.0, reduction="none")
    return values.reshape(lead)
