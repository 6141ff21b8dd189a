"""Measuring the world model against the simulator: fidelity, controllability, speed (`wmgym eval`)."""

from wmgym.eval.fidelity import EvalConfig, evaluate, psnr, ssim, swap_controllability

__all__ = ["EvalConfig", "evaluate", "psnr", "ssim", "swap_controllability"]
