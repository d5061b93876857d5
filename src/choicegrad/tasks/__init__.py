"""Benchmark tasks with ground-truth oracles and known optima."""

from .items import PickFiveTask
from .planted import PlantedTask
from .potts import PottsTask

__all__ = ["PickFiveTask", "PlantedTask", "PottsTask"]
