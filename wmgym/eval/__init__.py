"""Measuring the world model against the simulator: fidelity, controllability, speed (`wmgym eval`)."""

from wmgym.eval.fidelity import EvalConfig, evaluate, swap_controllability
from wmgym.image_metrics import psnr, ssim

__all__ = ["EvalConfig", "evaluate", "psnr", "ssim", "swap_controllability"]
