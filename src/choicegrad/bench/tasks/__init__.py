"""Benchmark tasks with ground-truth oracles and known optima.

Every task is a BenchmarkTask (tasks/base.py: space, contexts, truth, statistics, training table)
registered in tasks/registry.py: get_task(NAME, **options) for NAME in TASKS. Table tasks are
Landscapes (every row's score known; synthetic.py, landscape.py), contextual tasks ContextualTask
(contextual.py), item tasks ItemTask subclasses (items.py: ItemSelectionTask, SlateTask, PickFiveTask).
"""

from choicegrad.bench.tasks.base import BenchmarkTask
from choicegrad.bench.tasks.contextual import ContextualTask
from choicegrad.bench.tasks.ehrlich import EhrlichModel
from choicegrad.bench.tasks.items import ItemSelectionTask, ItemTask, PickFiveTask, SlateTask
from choicegrad.bench.tasks.landscape import Landscape
from choicegrad.bench.tasks.nk import NKModel
from choicegrad.bench.tasks.planted import PlantedTask
from choicegrad.bench.tasks.potts import PottsTask
from choicegrad.bench.tasks.registry import TASKS, get_task, register_task

__all__ = ["BenchmarkTask", "ContextualTask", "EhrlichModel", "ItemSelectionTask", "ItemTask", "Landscape", "NKModel",
           "PickFiveTask", "PlantedTask", "PottsTask", "SlateTask", "TASKS", "get_task", "register_task"]
