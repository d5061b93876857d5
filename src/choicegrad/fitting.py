"""What the fits of every kind of run share (table runs in choicegrad.run, item runs in
choicegrad.items): the method check, the generate options check, the scorer's metrics file read
back on resume, the time left of a fit's limit, the generator's training summary in config.json."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from pydantic import BaseModel, ConfigDict, Field

from choicegrad.checkpoints import CHECKPOINT_MINUTES

from choicegrad.decoding.decoders import decode_problems
from choicegrad.errors import InputError, did_you_mean
from choicegrad.estimators import available
from choicegrad.generators import KINDS
from choicegrad.io import meta_problem, read_json_object
from choicegrad.scorer.fit import ScorerFit, ScorerResult
from choicegrad.scorer.model import Scorer
from choicegrad.training.loop import GeneratorFit, GeneratorResult

#: Decoders that need no objective: they rank rows by the generator's own probability.
GENERATOR_DECODERS = ("argmax", "sample", "topk")
SCORER_METRICS = "scorer_metrics.json"


def check_method(method: str, kind: str) -> str:
    """The normalised estimator name ('st_gumbel' -> 'st-gumbel'); InputError('method/generator')
    for an unknown method or a generator form other than factorized or autoregressive."""
    problems = []
    key = method.strip().lower().replace("_", "-")
    methods = available()
    if key not in methods:
        problems.append(f'unknown method "{method}"{did_you_mean(key, methods)}; choose one of {", ".join(methods)}')
    if kind not in KINDS or kind == "pointer":
        problems.append(f'unknown generator "{kind}"{did_you_mean(kind, ["factorized", "autoregressive"])}; '
                        "choose factorized or autoregressive")
    if problems:
        raise InputError("method/generator", problems)
    return key


def generate_problems(k: int, decoder: str, temperature: Optional[float], samples: Optional[int],
                      budget: Optional[int], seed: int = 0, min_distance: int = 1) -> list[str]:
    """'argument: problem' lines for bad Run.generate options (empty when all are fine): decode's own
    check (decode_problems; temperature None: the decoder's default) and the seed's, for a caller to
    check them before reading anything (the
    CLI, item runs)."""
    problems = decode_problems(decoder, k, 1.0 if temperature is None else temperature, samples, budget,
                               min_distance=min_distance)
    if not 0 <= seed < 2**63:
        problems.append(f"seed: expected an integer in 0 .. 2**63 - 1, got {seed}")
    return problems


def read_config(path: Path) -> dict:
    """A JSON object file as a dict ({} when absent); InputError naming the file when it is not UTF-8
    JSON or not an object."""
    return read_json_object(path) if path.is_file() else {}


class _HeldOut(BaseModel):
    """One held-out set's line of scorer_metrics.json (other fields kept as they are)."""

    model_config = ConfigDict(extra="allow")
    n: int = Field(ge=0)
    r2: Optional[float] = None
    spearman: Optional[float] = None
    spearman_per_context: Optional[float] = None


class _ScorerMetricsFile(BaseModel):
    """What scorer_metrics.json must hold to be read back (a resume, a finished run)."""

    model_config = ConfigDict(extra="allow")
    metrics: dict[str, _HeldOut] = {}
    seconds: float = Field(0.0, ge=0, allow_inf_nan=False)


def read_scorer_result(run_dir: Path, load: Callable = Scorer.load) -> ScorerResult:
    """The fitted scorer (load(run_dir): Scorer.load, ItemScorer.load) and its metrics, read back from
    a run folder; InputError naming scorer_metrics.json when it is not the file choicegrad wrote."""
    path = run_dir / SCORER_METRICS
    try:
        doc = _ScorerMetricsFile.model_validate(read_config(path))
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(str(path), [f"not the scorer_metrics.json choicegrad wrote: {meta_problem(exc)}; start over "
                                     "with overwrite=True"]) from None
    metrics = {k: v.model_dump(exclude_unset=True) for k, v in doc.metrics.items()}
    return ScorerResult(load(run_dir), metrics, [], doc.seconds)


def minutes_left(max_minutes: Optional[float], spent: float, share: int) -> Optional[float]:
    """1/share of the minutes left of max_minutes after `spent` seconds (at least 0.05); None without a limit."""
    return None if max_minutes is None else max(0.05, (max_minutes - spent / 60) / share)


def training_summary(res: GeneratorResult) -> dict:
    """config.json's `generator_training`: seconds, scorer calls, best validation, why it stopped."""
    return {"seconds": res.seconds, "scorer_calls": res.scorer_calls, "best_validation": res.best_val,
            "stopped": res.stopped}


class FitOptions(BaseModel):
    """How Run.fit fits and writes a run, beside the data, the folder and the columns; every field is
    also a keyword of Run.fit (Run.fit(data, out, table, overwrite=True)).

    generator: 'autoregressive' or 'factorized'; scorer_fit/generator_fit: how to fit each (seed,
    device and beta are set in each; None: their defaults). max_minutes bounds the whole fit (half
    for the scorer, what is left for the generator) and overrides their own limits. overwrite allows
    replacing a finished run, resume continues an interrupted one from its checkpoints, saved every
    checkpoint_minutes (choicegrad.runfolder). echo gets the progress lines, on_scorer(metrics) the
    scorer's held-out metrics; progress: progress bars (None: on a terminal). stream (implied by a
    folder) reads a Parquet file or folder as a stream, `workers` DataLoader processes reading it
    (fit_scorer_run). force_generator trains a generator even where enumerating is cheaper."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    generator: str = "autoregressive"
    scorer_fit: Optional[ScorerFit] = None
    generator_fit: Optional[GeneratorFit] = None
    max_minutes: Optional[float] = None
    resume: bool = False
    overwrite: bool = False
    checkpoint_minutes: float = CHECKPOINT_MINUTES
    echo: Callable[[str], None] = print
    progress: Optional[bool] = None
    on_scorer: Optional[Callable[[dict], None]] = None
    stream: bool = False
    workers: int = 0
    force_generator: bool = False
