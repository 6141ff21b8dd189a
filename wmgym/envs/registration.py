"""Registers wmgym's environments with Gymnasium (called once by ``import wmgym``)."""

import gymnasium as gym


def register_envs() -> None:
    """Register ``SimFold-v0``, ``WMFold-v0`` and ``wmgym/WorldModel-v0``; safe to call more than once.

    ``WMFold-v0`` has a vector entry point, so ``gym.make_vec("WMFold-v0", num_envs=16)``
    builds one natively batched `WorldModelVectorEnv`. Its horizon is ``max_episode_steps``
    (default 16), for ``gym.make`` and ``gym.make_vec`` alike.

    ``wmgym/WorldModel-v0`` serves a world model trained on real robot data from a robot bundle
    (``wmgym bundle --data STORE``; `wmgym.envs.robot_env`): ``gym.make`` gives a
    `RobotWorldModelEnv`, ``gym.make_vec`` one natively batched `RobotWorldModelVectorEnv`
    (``vectorization_mode="sync"`` for Gymnasium's loop over single envs). Horizon: default 32.
    """
    if "SimFold-v0" not in gym.registry:
        gym.register(id="SimFold-v0", entry_point="wmgym.envs.sim_fold:SimFoldEnv")
    if "WMFold-v0" not in gym.registry:
        gym.register(id="WMFold-v0", entry_point="wmgym.envs.world_model_env:WorldModelEnv",
                     vector_entry_point="wmgym.envs.world_model_env:WorldModelVectorEnv", max_episode_steps=16)
    if "wmgym/WorldModel-v0" not in gym.registry:
        gym.register(id="wmgym/WorldModel-v0", entry_point="wmgym.envs.robot_env:RobotWorldModelEnv",
                     vector_entry_point="wmgym.envs.robot_env:RobotWorldModelVectorEnv", max_episode_steps=32)
