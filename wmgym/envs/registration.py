"""Registers wmgym's environments with Gymnasium (called once by ``import wmgym``)."""

import gymnasium as gym


def register_envs() -> None:
    """Register ``SimFold-v0``; safe to call more than once."""
    if "SimFold-v0" not in gym.registry:
        gym.register(id="SimFold-v0", entry_point="wmgym.envs.sim_fold:SimFoldEnv")
