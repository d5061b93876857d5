"""Shared fixtures: small tables written to tmp files, and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from choicegrad.bench.tasks import PottsTask

# The test models are tiny: one thread avoids thread-pool overhead and keeps timings steady on 2 cores.
torch.set_num_threads(1)

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
