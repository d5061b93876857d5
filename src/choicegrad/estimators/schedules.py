"""Temperature schedules: small callables step -> tau (float). Pass the value per call as `tau=`.

Steps past `steps` keep the end value; step must be >= 0.
"""

from __future__ import annotations

import math

from choicegrad.estimators.base import check_int, check_tau


def _check_steps(steps) -> int:
    return check_int(steps, "steps", 1)


def _check_step(step) -> int:
    return check_int(step, "step", 0)


class Constant:
    """tau(step) = tau."""

    def __init__(self, tau: float):
        self.tau = check_tau(tau, "tau")

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.tau

    def __repr__(self) -> str:
        return f"Constant(tau={self.tau})"


class Exponential:
    """Geometric interpolation: tau(step) = start * (end / start) ** (min(step, steps) / steps)."""

    def __init__(self, start: float, end: float, steps: int):
        self.start, self.end = check_tau(start, "start"), check_tau(end, "end")
        self.steps = _check_steps(steps)

    def __call__(self, step: int) -> float:
        frac = min(_check_step(step), self.steps) / self.steps
        return self.start * (self.end / self.start) ** frac

    def __repr__(self) -> str:
        return f"Exponential(start={self.start}, end={self.end}, steps={self.steps})"


class Cosine:
    """Cosine interpolation: tau(step) = end + (start - end) * (1 + cos(pi * min(step, steps) / steps)) / 2."""

    def __init__(self, start: float, end: float, steps: int):
        self.start, self.end = check_tau(start, "start"), check_tau(end, "end")
        self.steps = _check_steps(steps)

    def __call__(self, step: int) -> float:
        frac = min(_check_step(step), self.steps) / self.steps
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * frac))

    def __repr__(self) -> str:
        return f"Cosine(start={self.start}, end={self.end}, steps={self.steps})"
