"""Benchmark tasks with ground-truth oracles and known optima.

Table tasks are Landscapes (every row's score known): get_task("potts" | "nk2" | "nk3" | "nk4" |
"ehrlich" | "tfbind8" | "gb1" | "pard3"); the factories live in choicegrad.bench.tasks.synthetic and
choicegrad.bench.tasks.landscape. Item tasks (pointer form): ItemSelectionTask, PickFiveTask.
"""

from choicegrad.bench.tasks.ehrlich import EhrlichModel
from choicegrad.bench.tasks.items import ItemSelectionTask, PickFiveTask
from choicegrad.bench.tasks.landscape import Landscape
from choicegrad.bench.tasks.nk import NKModel
from choicegrad.bench.tasks.planted import PlantedTask
from choicegrad.bench.tasks.potts import PottsTask
from choicegrad.bench.tasks.registry import TASKS, get_task

__all__ = ["EhrlichModel", "ItemSelectionTask", "Landscape", "NKModel", "PickFiveTask", "PlantedTask",
           "PottsTask", "TASKS", "get_task"]
