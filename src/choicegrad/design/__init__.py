"""Design rounds: propose a batch, measure it, tell the results, refit and propose again."""

from choicegrad.design.acquisition import Acquisition, Measured
from choicegrad.design.designer import DesignConfig, Designer
from choicegrad.decoding.select import select_batch

__all__ = ["Acquisition", "DesignConfig", "Designer", "Measured", "select_batch"]
