"""Registers wmgym's environments with Gymnasium (called once by ``import wmgym``)."""

import gymnasium as gym


def register_envs() -> None:
    """Register ``SimFold-v0`` and ``WMFold-v0``; safe to call more than once.

    ``WMFold-v0`` has a vector entry point, so ``gym.make_vec("WMFold-v0", num_envs=16)``
    builds one natively batched `WorldModelVectorEnv`. Its horizon is ``max_episode_steps``
    (default 16), for ``gym.make`` and ``gym.make_vec`` alike.
    """
    if "SimFold-v0" not in gym.registry:
        gym.register(id="SimFold-v0", entry_point="wmgym.envs.sim_fold:SimFoldEnv")
    if "WMFold-v0" not in gym.registry:
        gym.register(id="WMFold-v0", entry_point="wmgym.envs.world_model_env:WorldModelEnv",
                     vector_entry_point="wmgym.envs.world_model_env:WorldModelVectorEnv", max_episode_steps=16)
