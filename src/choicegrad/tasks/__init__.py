"""Benchmark tasks with ground-truth oracles and known optima."""

from .potts import PottsTask

__all__ = ["PottsTask"]
