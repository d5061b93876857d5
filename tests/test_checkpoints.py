"""Resumable training: state round-trips through safetensors + JSON, an interrupted fit resumed from
its checkpoint is bit-identical to an uninterrupted one (scorer and generator, every phase), a
signal becomes save-then-Interrupted, and progress is plain lines off a terminal."""

import io
import json
import math
import os
import signal

import pytest
import torch

from choicegrad.bench.tasks import PottsTask
from choicegrad.checkpoints import Checkpointer, decode_state, encode_state
from choicegrad.data.table import load_table
from choicegrad.errors import InputError, Interrupted
from choicegrad.generators import GeneratorConfig
from choicegrad.progress import LineProgress, progress_bar
from choicegrad.scorer.fit import ScorerFit, fit_scorer
from choicegrad.training.loop import GeneratorFit, fit_table_generator


class StopAt(Checkpointer):
    """Saves at every tick and raises Interrupted at tick number `at` of phase `name` (as after SIGINT)."""

    def __init__(self, root, name: str, at: int):
        super().__init__(root, every_minutes=0)
        self.name, self.at, self.count = name, at, 0

    def tick(self, name: str) -> bool:
        if name == self.name:
            self.count += 1
            if self.count == self.at:
                self.stop = signal.SIGINT
        return super().tick(name)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "t.csv"
    PottsTask(slots=4, vocab=4, contexts=3, seed=0).table(n=600, seed=1).to_csv(path, index=False)
    return load_table(path, "s?", "y", "ctx")


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_state_round_trip_keeps_types():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    state = {"opt": opt.state_dict(), "best": math.inf, "nan": math.nan, "pair": (1, "a"), "none": None,
             "rows": [{"phase": "val", "loss": 0.5}], "__odd": 1}
    skeleton, tensors = encode_state(state)
    back = decode_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["best"] == math.inf and math.isnan(back["nan"]) and back["pair"] == (1, "a")
    assert back["rows"] == state["rows"] and back["__odd"] == 1 and back["none"] is None
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(back["opt"]["state"]) == {0, 1}               # integer keys survive JSON
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(back["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


@pytest.mark.parametrize("at", [3, 11, 17])   # mid-epoch of member 0, an epoch boundary region, member 1
def test_scorer_resume_is_bit_identical(table, tmp_path, at):
    fit = ScorerFit(epochs=5, ensemble=2, ranking=0.3, batch_size=128, seed=3)
    full = fit_scorer(table, fit, progress=False)
    ckpt = StopAt(tmp_path / "ck", "scorer", at)
    with pytest.raises(Interrupted) as exc:
        fit_scorer(table, fit, progress=False, checkpoint=ckpt)
    assert exc.value.signum == signal.SIGINT and exc.value.phase == "scorer"
    resumed = fit_scorer(table, fit, progress=False, checkpoint=Checkpointer(tmp_path / "ck", resume=True))
    assert states_equal(full.scorer.state_dict(), resumed.scorer.state_dict())
    assert full.history == resumed.history and full.metrics == resumed.metrics


@pytest.fixture(scope="module")
def scorer(table):
    return fit_scorer(table, ScorerFit(epochs=4, seed=0), progress=False).scorer


@pytest.mark.parametrize("kind,method,phase,at,distill", [
    ("autoregressive", "reinforce", "warm", 7, 0.0),        # during the warm start
    ("autoregressive", "reinforce", "generator", 23, 0.0),  # between validations
    ("factorized", "st-gumbel", "generator", 40, 0.0),      # right after a validation
    ("autoregressive", "reinforce", "generator", 23, 1.0),  # amortised search: its replay is restored too
])
def test_generator_resume_is_bit_identical(table, scorer, tmp_path, kind, method, phase, at, distill):
    fit = GeneratorFit(method=method, steps=60, val_every=20, warm_start_steps=15, log_every=5, seed=2,
                       distill=distill)
    cfg = GeneratorConfig(kind=kind, hidden=[32])
    full = fit_table_generator(scorer, table, cfg, fit, progress=False)
    ckpt = StopAt(tmp_path / "ck", phase, at)
    with pytest.raises(Interrupted):
        fit_table_generator(scorer, table, cfg, fit, progress=False, checkpoint=ckpt, run_dir=tmp_path)
    resumed = fit_table_generator(scorer, table, cfg, fit, progress=False, run_dir=tmp_path,
                                  checkpoint=Checkpointer(tmp_path / "ck", resume=True))
    assert states_equal(full.generator.state_dict(), resumed.generator.state_dict())
    assert (full.best_val, full.scorer_calls, full.stopped) == (resumed.best_val, resumed.scorer_calls, resumed.stopped)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(full.history) == drop(resumed.history)
    logged = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(logged) == 1 + len(full.history)                # the log holds each row once


def test_a_save_cut_before_its_json_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path, every_minutes=0)
    ckpt.save("phase", {"x": torch.arange(3), "step": 1})
    import choicegrad.checkpoints as module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "atomic_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("phase", {"x": torch.arange(5), "step": 2})
    monkeypatch.undo()
    state = Checkpointer(tmp_path, resume=True).load("phase")
    assert state["step"] == 1 and torch.equal(state["x"], torch.arange(3))


def test_unreadable_checkpoint_is_an_input_error(tmp_path):
    Checkpointer(tmp_path).save("phase", {"x": torch.ones(2)})
    (tmp_path / "phase.json").write_text('{"weights": "missing.safetensors", "state": {}}')
    with pytest.raises(InputError, match="unreadable checkpoint"):
        Checkpointer(tmp_path, resume=True).load("phase")
    assert Checkpointer(tmp_path, resume=False).load("phase") is None   # not resuming: never read


def test_signal_sets_stop_then_interrupted(tmp_path):
    ckpt = Checkpointer(tmp_path / ".checkpoint", every_minutes=60, label=tmp_path / "run")
    with ckpt.catch_signals():
        assert not ckpt.tick("scorer")
        os.kill(os.getpid(), signal.SIGTERM)
        assert ckpt.tick("scorer")
        with pytest.raises(Interrupted, match=r"SIGTERM.*scorer phase saved in .*run.*--resume") as exc:
            ckpt.check_stop("scorer")
    assert exc.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL     # handlers put back


def test_progress_off_a_terminal_is_plain_lines(monkeypatch):
    out = io.StringIO()
    bar = LineProgress(total=3, desc="fit scorer", unit="epoch", every=0, file=out)
    bar.set_postfix(val="0.5")
    bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("fit scorer: 1/3 epoch,") and lines[0].endswith("val=0.5")
    assert lines[-1].endswith(", done") and "\r" not in out.getvalue()
    quiet = io.StringIO()
    LineProgress(total=3, desc="x", unit="step", every=60, file=quiet).close()
    assert quiet.getvalue() == ""                               # short work prints nothing
    monkeypatch.setattr("sys.stderr", io.StringIO())            # not a terminal
    assert isinstance(progress_bar(3, "x", "step"), LineProgress)
    progress_bar(3, "x", "step", enabled=False).update(1)       # silent


def test_scorer_time_limit_is_split_across_members(table, monkeypatch):
    """A fake clock (one second per reading): member m of 3 stops once (m + 1) / 3 of the time has passed,
    mid-epoch if need be, so the whole fit ends within a batch of the limit."""
    import choicegrad.scorer.fit as module

    clock = iter(range(10**6))
    monkeypatch.setattr(module.time, "perf_counter", lambda: float(next(clock)))
    result = fit_scorer(table, ScorerFit(epochs=50, ensemble=3, batch_size=32, max_minutes=1.0, seed=0),
                        progress=False)
    members = [h["member"] for h in result.history]
    assert sorted(set(members)) == [0, 1, 2]                     # every member trained
    assert result.seconds <= 60 + 5                               # the limit, plus the readings of one batch
