"""Shared fixtures: small tables written to tmp files, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, Phase, settings
from typer.testing import CliRunner

from choicegrad.bench.tasks import PottsTask

# The test models are tiny: one thread avoids thread-pool overhead and keeps timings steady on 2 cores.
torch.set_num_threads(1)

# Property tests (tests/test_fuzz.py): `ci` (the default, `make test`) tries few examples from a fixed
# seed, so a run is quick and reproducible; `fuzz` (`make fuzz`) tries many, from a fresh seed each run.
# Pick one with HYPOTHESIS_PROFILE. Examples run the CLI or fit models, so there is no deadline.
# `ci` stops at the first failure without shrinking it (a CLI example takes up to a second); `fuzz`
# shrinks each distinct failure to a minimal example.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
                          suppress_health_check=_SLOW_OK)
# $CHOICEGRAD_FUZZ_EXAMPLES sizes a shorter or longer fuzz run (default 1000 per table test; CLI tests get a share)
settings.register_profile("fuzz", max_examples=int(os.environ.get("CHOICEGRAD_FUZZ_EXAMPLES", 1000)), deadline=None,
                          suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def potts_frame() -> pd.DataFrame:
    return PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=400, seed=1)


@pytest.fixture
def potts_csv(tmp_path, potts_frame) -> Path:
    path = tmp_path / "table.csv"
    potts_frame.to_csv(path, index=False)
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared/data is beside the repo in CI)")
    return path
