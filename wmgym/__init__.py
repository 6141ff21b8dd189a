"""wmgym: a learned simulator for bimanual cloth folding, served as Gymnasium environments.

Importing the package registers its environments (``SimFold-v0``, ``WMFold-v0``) with Gymnasium.
"""

__version__ = "0.1.0"

from wmgym.envs.registration import register_envs as _register_envs

_register_envs()
