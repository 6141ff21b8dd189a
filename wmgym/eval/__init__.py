"""Measuring the world model against the simulator: fidelity, controllability, speed (`wmgym eval`,
`wmgym.eval.fidelity`), and policies in both worlds (`wmgym eval-policies`, `wmgym.eval.policies`).

Nothing is imported here: `wmgym eval-policies --help` would otherwise import torch."""
