"""Benchmark tasks with ground-truth oracles and known optima.

Table tasks are Landscapes (every row's score known): get_task("potts" | "nk2" | "nk3" | "nk4" |
"ehrlich" | "tfbind8" | "gb1" | "pard3"); the factories live in choicegrad.tasks.synthetic and
choicegrad.tasks.landscape. Item tasks (pointer form): ItemSelectionTask, PickFiveTask.
"""

from .ehrlich import EhrlichModel
from .items import ItemSelectionTask, PickFiveTask
from .landscape import Landscape
from .nk import NKModel
from .planted import PlantedTask
from .potts import PottsTask
from .registry import TASKS, get_task

__all__ = ["EhrlichModel", "ItemSelectionTask", "Landscape", "NKModel", "PickFiveTask", "PlantedTask",
           "PottsTask", "TASKS", "get_task"]
