"""Your own score model as the objective (cg.FrameObjective, cg.ModuleObjective, `fit --objective`):
the done-when test (a user's torch net, its top rows found), the contract the user's function or
module sees, and the command line's answers to bad objectives and objective runs."""

import hashlib
import itertools
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import choicegrad as cg
from cli_helpers import assert_input_error, run

# --- 1. done when: a user's own torch net, public API only -------------------------------------------

#: The user's own label order: the index of their embeddings.
OWN = {"colour": ["red", "green", "blue", "cyan", "pink", "gold"],
       "size": ["xs", "s", "m", "l", "xl", "xxl", "huge"],
       "shape": ["disc", "star", "cube", "cone", "ring", "drop", "leaf", "bolt"],
       "taste": ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"]}
#: The space as declared to choicegrad: the same labels in another order (reversed, or rotated by two).
DECLARED = {f: labels[::-1] if i % 2 == 0 else labels[2:] + labels[:2] for i, (f, labels) in enumerate(OWN.items())}
#: Contexts in the order given; the net's one-hot is over the sorted categories.
USERS = ["eve", "bob", "dan", "amy", "cat"]
PAIRS = [("colour", "size"), ("size", "shape"), ("shape", "taste"), ("taste", "colour"), ("colour", "shape")]
DIM = 6
#: From a sweep over seeds (net seed 100 + s, fit seed s): reinforce with more rows per context and step than
#: the default and an entropy bonus that eases from 0.5 to 0.3 (the generator's own top-k sharpens without
#: collapsing onto one basin), no distillation (it pulls the generator's top-k towards the search's best rows).
#: Seeds 0-4, the least overlap over the 5 users, polish / generator alone: 7/6, 9/7, 10/7, 10/6, 10/6.
DONE_FIT = dict(method="reinforce", steps=600, lr=5e-3, batch_size=10, samples=32, entropy_end=0.3, distill=0, seed=2)
NET_SEED = 102


class UserNet(nn.Module):
    """One embedding per feature in the user's own label order, a per-user term and strong pairwise
    interactions (bilinear forms of the embeddings). forward maps the declared label order to its own."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.ModuleDict({f: nn.Embedding(len(v), DIM) for f, v in OWN.items()})
        for e in self.emb.values():
            e.weight.data = torch.randn(e.weight.shape, generator=g)
        self.user = nn.Embedding(len(USERS), len(OWN) * DIM)
        self.user.weight.data = torch.randn(self.user.weight.shape, generator=g) * 0.5
        self.mix = nn.Parameter(torch.randn(len(PAIRS), DIM, DIM, generator=g) * 1.5 / DIM)
        for f in OWN:      # declared index -> own index
            perm = torch.zeros(len(OWN[f]), len(OWN[f]))
            perm[range(len(OWN[f])), [OWN[f].index(label) for label in DECLARED[f]]] = 1
            self.register_buffer(f"perm_{f}", perm)

    def head(self, own: dict, users: torch.Tensor) -> torch.Tensor:
        e = {f: own[f] @ self.emb[f].weight for f in OWN}
        u = (users @ self.user.weight).reshape(-1, len(OWN), DIM)
        s = sum((e[f] * u[:, i]).sum(-1) for i, f in enumerate(OWN))
        for p, (a, b) in enumerate(PAIRS):
            s = s + torch.einsum("nd,de,ne->n", e[a], self.mix[p], e[b])
        return s

    def forward(self, features, context):
        return self.head({f: features[f] @ getattr(self, f"perm_{f}") for f in OWN}, context["user"])

    @torch.no_grad()
    def score_labels(self, frame: pd.DataFrame) -> np.ndarray:
        """The reference, straight from labels through the user's own indices (no choicegrad)."""
        own = {f: nn.functional.one_hot(torch.tensor([OWN[f].index(x) for x in frame[f]]), len(OWN[f])).float()
               for f in OWN}
        users = nn.functional.one_hot(torch.tensor([sorted(USERS).index(u) for u in frame["user"]]), len(USERS))
        return self.head(own, users.float()).numpy()


def top_rows(frame: pd.DataFrame, n: int) -> list[tuple]:
    return [tuple(r) for r in frame.sort_values("score", ascending=False, kind="stable")[list(OWN)].head(n).to_numpy()]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """The net, its enumerated ranking per user, and the run fitted to it with the generator forced."""
    torch.manual_seed(0)
    net = UserNet(NET_SEED)
    rows = pd.DataFrame(list(itertools.product(*OWN.values())), columns=list(OWN))   # 6 x 7 x 8 x 9 = 3,024
    ranked = {u: top_rows(rows.assign(user=u, score=net.score_labels(rows.assign(user=u))), 10) for u in USERS}
    out = tmp_path_factory.mktemp("done") / "run"
    said = []
    fitted = cg.Run.fit_objective(cg.ModuleObjective(net), out, space=DECLARED, contexts=pd.DataFrame({"user": USERS}),
                                  generator_fit=cg.GeneratorFit(**DONE_FIT), force_generator=True, echo=said.append,
                                  progress=False)
    return net, ranked, fitted, out, said


def test_done_when_polish_finds_the_nets_top_rows(done):
    net, ranked, fitted, out, said = done
    assert json.loads((out / "config.json").read_text())["generator"] is not None      # trained, not enumerated
    found = fitted.generate(k=10, decoder="polish")
    assert list(found.columns) == ["user", *DECLARED, "score", "rank"]
    for user in USERS:
        mine = found[found.user == user].sort_values("rank")
        rows = [tuple(r) for r in mine[list(OWN)].to_numpy()]
        assert rows[0] == ranked[user][0], (user, rows[0], ranked[user][0])
        assert len(set(rows) & set(ranked[user])) >= 8, (user, rows, ranked[user])
        # the scores written are the net's own, in the user's labels
        np.testing.assert_allclose(mine["score"], net.score_labels(mine), rtol=1e-5, atol=1e-5)


def test_done_when_the_generator_alone_proposes_them(done):
    net, ranked, fitted, out, said = done
    alone = cg.Run.load(out)                # no objective given back: the generator's own probability
    assert alone.objective is None
    proposed = alone.generate(k=10, decoder="topk")
    assert "log_prob" in proposed.columns and proposed.attrs["scorer_calls"] == 0
    for user in USERS:
        rows = {tuple(r) for r in proposed[proposed.user == user][list(OWN)].to_numpy()}
        assert len(rows & set(ranked[user])) >= 6, (user, sorted(rows), ranked[user])


# --- 2. the contract -----------------------------------------------------------------------------------

SPACE = {"a": ["y", "z", "x"], "b": ["q", "p"]}                 # declared order, not sorted
CONTEXTS = pd.DataFrame({"user": ["u2", "u1"], "t": [0.1, 12345.678901234567]})   # not float32 numbers


class Recorder:
    """A black box keeping every frame it is given: 2 if a is z, plus 1 if b is the user's favourite."""

    __name__ = "recorder"

    def __init__(self):
        self.frames = []

    def __call__(self, frame):
        self.frames.append(frame.copy())
        fav = np.where(frame["user"] == "u1", "p", "q")
        return 2.0 * (frame["a"] == "z").to_numpy() + (frame["b"].to_numpy() == fav)


class OrderNet(nn.Module):
    """The same score as Recorder from one-hot rows in the declared order; keeps what it is given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, features, context):
        self.seen.append(({k: v.detach().clone() for k, v in features.items()},
                          {k: v.detach().clone() for k, v in context.items()}))
        a, b, user = features["a"], features["b"], context["user"]       # user: one-hot over ["u1", "u2"]
        z = SPACE["a"].index("z")
        p, q = SPACE["b"].index("p"), SPACE["b"].index("q")
        return 2.0 * a[:, z] + user[:, 0] * b[:, p] + user[:, 1] * b[:, q] + 0.0 * context["t"]


def best_rows(frame):
    return {u: tuple(g.sort_values("rank")[["a", "b"]].iloc[0]) for u, g in frame.groupby("user")}


def test_frame_objective_sees_labels_and_exact_context_values(tmp_path):
    rec = Recorder()
    fitted = cg.Run.fit_objective(cg.FrameObjective(rec), tmp_path / "run", space=SPACE, contexts=CONTEXTS,
                                  force_generator=True, echo=lambda m: None, progress=False,
                                  generator_fit=cg.GeneratorFit(steps=1, batch_size=2, samples=4, val_samples=4))
    assert rec.frames, "the black box was never called while fitting"
    exact = dict(zip(CONTEXTS.user, CONTEXTS.t))
    for frame in rec.frames:
        assert list(frame.columns) == ["a", "b", "user", "t"]
        assert set(frame["a"]) <= set(SPACE["a"]) and set(frame["b"]) <= set(SPACE["b"])
        assert set(frame["user"]) <= set(exact)
        assert frame["t"].dtype == np.float64
        assert (frame["t"].to_numpy() == frame["user"].map(exact).to_numpy()).all()    # bit for bit, not float32
    # calls are counted: the rows the function was given
    assert fitted.objective.calls == sum(len(f) for f in rec.frames)
    before, n = fitted.objective.calls, len(rec.frames)
    found = fitted.generate(k=6, decoder="exhaustive")
    assert found.attrs["scorer_calls"] == 12 == fitted.objective.calls - before == sum(len(f) for f in rec.frames[n:])
    assert best_rows(found) == {"u1": ("z", "p"), "u2": ("z", "q")}


def test_module_objective_sees_one_hot_rows_in_declared_order(tmp_path):
    net = OrderNet()
    fitted = cg.Run.fit_objective(cg.ModuleObjective(net), tmp_path / "run", space=SPACE, contexts=CONTEXTS,
                                  echo=lambda m: None, progress=False)
    found = fitted.generate(k=6)              # the space is small: enumerated, the exact top rows
    assert best_rows(found) == {"u1": ("z", "p"), "u2": ("z", "q")}
    assert net.seen
    for features, context in net.seen:
        n = len(features["a"])
        assert list(features) == ["a", "b"] and features["a"].shape == (n, 3) and features["b"].shape == (n, 2)
        for v in features.values():
            assert v.dtype == torch.float32 and set(v.unique().tolist()) <= {0.0, 1.0} and (v.sum(1) == 1).all()
        assert context["user"].shape == (n, 2) and (context["user"].sum(1) == 1).all()
        assert context["t"].shape == (n,) and context["t"].dtype == torch.float32
        users = np.array(["u1", "u2"])[context["user"].argmax(1).numpy()]
        np.testing.assert_allclose(context["t"].numpy(), np.where(users == "u1", 12345.678901234567, 0.1), rtol=1e-7)


def test_gradients_reach_soft_rows_through_a_module(tmp_path):
    fitted = cg.Run.fit_objective(cg.ModuleObjective(OrderNet()), tmp_path / "run", space=SPACE, contexts=CONTEXTS,
                                  echo=lambda m: None, progress=False)
    objective = fitted.objective
    assert objective.differentiable and not cg.FrameObjective(Recorder()).differentiable
    ctx = cg.TableContext(*fitted.context.encode(CONTEXTS, "contexts"))
    x = torch.full((2, 2, 3), 0.25).requires_grad_(True)               # soft rows, padded to the widest slot
    objective(x, ctx).sum().backward()
    z, p, q = SPACE["a"].index("z"), SPACE["b"].index("p"), SPACE["b"].index("q")
    assert torch.allclose(x.grad[:, 0, z], torch.tensor(2.0))
    assert x.grad[0, 1, q] == 1 and x.grad[0, 1, p] == 0                # u2 likes q
    assert x.grad[1, 1, p] == 1 and x.grad[1, 1, q] == 0                # u1 likes p
    assert (x.grad[:, 1, 2] == 0).all()                                 # b's padding is not a category


def test_pathwise_method_trains_a_module_and_the_scale_is_reported(tmp_path):
    said = []
    fitted = cg.Run.fit_objective(cg.ModuleObjective(OrderNet()), tmp_path / "run", space=SPACE, contexts=CONTEXTS,
                                  force_generator=True, echo=said.append, progress=False,
                                  generator_fit=cg.GeneratorFit(method="st-gumbel", steps=2, batch_size=2, val_samples=4))
    record = json.loads((tmp_path / "run" / "objective.json").read_text())
    assert record["kind"] == "python" and record["name"] == "OrderNet" and record["differentiable"] is True
    assert record["scale_estimated"] is True and record["scale"] == pytest.approx(fitted.objective.scale)
    ctx = cg.TableContext(*fitted.context.encode(CONTEXTS, "contexts")).unique()[0]    # as the fit saw them
    assert record["scale"] == pytest.approx(cg.estimate_scale(fitted.objective, fitted.space, ctx, seed=0), rel=1e-6)
    assert any(f"scale {record['scale']:.4g}" in m for m in said), said
    given = cg.Run.fit_objective(cg.FrameObjective(Recorder(), scale=2.5), tmp_path / "given", space=SPACE,
                                 contexts=CONTEXTS, force_generator=True, echo=lambda m: None, progress=False,
                                 generator_fit=cg.GeneratorFit(steps=1, batch_size=2, samples=4, val_samples=4))
    record = json.loads((tmp_path / "given" / "objective.json").read_text())
    assert record["scale"] == 2.5 and record["scale_estimated"] is False and given.objective.scale == 2.5


def boom(frame):
    raise ValueError("simulator offline")


class BadNet(nn.Module):
    def forward(self, features, context):
        return features["nope"]


def test_refusals_name_the_method_and_the_function(tmp_path):
    fit = dict(space=SPACE, contexts=CONTEXTS, force_generator=True, echo=lambda m: None, progress=False,
               generator_fit=cg.GeneratorFit(steps=1, batch_size=2, samples=4, val_samples=4))
    with pytest.raises(cg.InputError, match="st-gumbel") as err:
        cg.Run.fit_objective(cg.FrameObjective(Recorder()), tmp_path / "a", **{
            **fit, "generator_fit": cg.GeneratorFit(method="st_gumbel", steps=1)})
    assert err.value.source == "method" and "reinforce" in str(err.value)
    with pytest.raises(cg.InputError, match="simulator offline") as err:
        cg.Run.fit_objective(cg.FrameObjective(boom), tmp_path / "b", **fit)
    assert err.value.source == "boom" and "ValueError" in str(err.value)
    with pytest.raises(cg.InputError, match="KeyError") as err:
        cg.Run.fit_objective(cg.ModuleObjective(BadNet()), tmp_path / "c", **fit)
    assert err.value.source == "BadNet" and "forward(features, context)" in str(err.value)
    with pytest.raises(cg.InputError, match="torch.nn.Module instance"):
        cg.ModuleObjective(BadNet)                                       # the class, not an instance
    with pytest.raises(cg.InputError, match="function"):
        cg.FrameObjective(3.0)
    assert not any(tmp_path.iterdir())                                   # nothing written


# --- 3. the command line -------------------------------------------------------------------------------

OBJS = '''
import numpy as np
import torch

FAV = {"u1": "p", "u2": "q"}

def good(frame):
    return 2.0 * (frame["a"] == "z").to_numpy() + (frame["b"] == frame["user"].map(FAV)).to_numpy() + 0.01 * frame["t"].to_numpy()

def boom(frame):
    raise ValueError("simulator offline")

def short(frame):
    return np.zeros(len(frame) - 1)

def text(frame):
    return ["high"] * len(frame)

def nan(frame):
    return np.where(frame["a"] == "x", np.nan, 1.0)

def inf(frame):
    return np.where(frame["b"] == "p", np.inf, 1.0)

class Net(torch.nn.Module):
    def forward(self, features, context):
        return 2.0 * features["a"][:, 1] + context["t"]

net = Net()
'''


def good_scores(frame):
    fav = frame["user"].map({"u1": "p", "u2": "q"})
    return 2.0 * (frame["a"] == "z") + (frame["b"] == fav) + 0.01 * frame["t"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "objs.py").write_text(OBJS)
    (tmp / "space.json").write_text(json.dumps(SPACE))
    CONTEXTS.to_csv(tmp / "contexts.csv", index=False)
    return tmp


def fit_args(files, name, out, *extra, file=None):
    return ["fit", "--objective", f"{file or files / 'objs.py'}:{name}", "--space", files / "space.json",
            "--contexts", files / "contexts.csv", "--out", out, *extra]


#: a generator however small the space, trained for a moment (the bad inputs fail before training)
TINY = ["--force-generator", "--steps", "2", "--batch-size", "2", "--distill", "0"]


@pytest.mark.parametrize("name, needles", [
    ("boom", ["objs.py:boom", "raised ValueError: simulator offline"]),
    ("short", ["objs.py:short", "for 128 rows", "one number per row"]),
    ("text", ["objs.py:text", "not all numbers"]),
    ("nan", ["objs.py:nan", "returned nan at row", "'a': 'x'", "finite"]),
    ("inf", ["objs.py:inf", "returned inf at row", "'b': 'p'", "finite"]),
    ("Net", ["objs.py:Net", "not a class", "net = Net()"]),
    ("goood", ["objs.py", 'has no "goood"', 'did you mean "good"?']),
])
def test_fit_refuses_a_bad_objective(files, tmp_path, name, needles):
    res = run(*fit_args(files, name, tmp_path / "out", *TINY))
    assert_input_error(res, *needles)
    assert res.output.count("error:") == 1
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())     # no --out, no partial beside it


def test_fit_refuses_a_missing_file_a_clash_and_a_black_box_with_a_pathwise_method(files, tmp_path):
    res = run(*fit_args(files, "good", tmp_path / "out", *TINY, file=tmp_path / "nope.py"))
    assert_input_error(res, "--objective", "nope.py: file not found")
    clash = tmp_path / "clash.csv"
    CONTEXTS.assign(a="y").to_csv(clash, index=False)                  # a context column that is a feature too
    res = run("fit", "--objective", f"{files / 'objs.py'}:good", "--space", files / "space.json",
              "--contexts", clash, "--out", tmp_path / "out", *TINY)
    assert_input_error(res, "clash.csv", "column a also name features of the space")
    res = run(*fit_args(files, "good", tmp_path / "out", *TINY, "--method", "st-gumbel"))
    assert_input_error(res, "--method", "st-gumbel", "not differentiable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clash.csv"]


def test_an_enumerated_fit_still_checks_the_objective(files, tmp_path):
    res = run(*fit_args(files, "boom", tmp_path / "out"))
    assert_input_error(res, "objs.py:boom", "simulator offline")


def test_load_objective_imports_the_file_as_python_would(files, tmp_path):
    """Registered as a module: a dataclass under `from __future__ import annotations` works and the
    function pickles (a process pool); a top-level sys.exit() is an error naming the file, not an exit."""
    (tmp_path / "dc.py").write_text("from __future__ import annotations\nfrom dataclasses import dataclass\n"
                                    "import numpy as np\n\n@dataclass\nclass W:\n    a: float = 1.0\n\n"
                                    "def f(frame):\n    return np.full(len(frame), W().a)\n")
    objective, record = cg.load_objective(f"{tmp_path / 'dc.py'}:f")
    assert isinstance(objective, cg.FrameObjective) and record["kind"] == "frame" and record["name"] == "f"
    assert pickle.loads(pickle.dumps(objective.fn)) is objective.fn
    (tmp_path / "ex.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(cg.InputError, match=r"ex.py: importing it called sys.exit\(3\)"):
        cg.load_objective(f"{tmp_path / 'ex.py'}:f")
    res = run(*fit_args(files, "f", tmp_path / "out", *TINY, file=tmp_path / "ex.py"))
    assert_input_error(res, "--objective", "ex.py: importing it called sys.exit(3)")
    objective, record = cg.load_objective(f"{files / 'objs.py'}:net")
    assert isinstance(objective, cg.ModuleObjective) and record["kind"] == "module"


@pytest.fixture(scope="module")
def cli_run(files):
    out = files / "run"
    res = run(*fit_args(files, "good", out, "--force-generator", "--steps", "4", "--batch-size", "2",
                        "--distill", "0"))
    assert res.exit_code == 0, res.output
    assert "objective: scale" in res.output
    return out


def test_fit_records_the_file_never_its_code(files, cli_run):
    record = json.loads((cli_run / "objective.json").read_text())
    assert record["file"] == "objs.py" and record["name"] == "good" and record["kind"] == "frame"
    assert record["sha256"] == hashlib.sha256((files / "objs.py").read_bytes()).hexdigest()
    assert record["differentiable"] is False and record["scale_estimated"] is True and record["scale"] > 0
    assert not any(p.suffix == ".py" for p in cli_run.iterdir())


def test_generate_with_the_objective(files, cli_run, tmp_path):
    out = tmp_path / "c.csv"
    res = run("generate", cli_run, "--objective", f"{files / 'objs.py'}:good", "--top-k", "3", "--out", out)
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["user", "t", "a", "b", "score", "rank"]
    np.testing.assert_allclose(frame["score"], good_scores(frame), rtol=1e-6)
    assert best_rows(frame) == {"u1": ("z", "p"), "u2": ("z", "q")}


def test_generate_with_the_objective_on_new_contexts(files, cli_run, tmp_path):
    """--objective with --contexts: a temperature the training never had reaches the function as written."""
    pd.DataFrame({"user": ["u1", "u1"], "t": [-7.25, 250.5]}).to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "n.csv"
    res = run("generate", cli_run, "--objective", f"{files / 'objs.py'}:good", "--contexts", tmp_path / "new.csv",
              "--top-k", "2", "--out", out)
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert sorted(set(frame["t"])) == [-7.25, 250.5] and (frame[frame["rank"] == 1][["a", "b"]] == ["z", "p"]).all().all()
    np.testing.assert_allclose(frame["score"], good_scores(frame), rtol=1e-6)


def test_generate_refuses_a_changed_objective_file_unless_told(files, cli_run, tmp_path):
    (tmp_path / "new").mkdir()
    changed = tmp_path / "new" / "objs.py"
    changed.write_text(OBJS.replace("0.01 *", "0.02 *"))
    out = tmp_path / "c.csv"
    res = run("generate", cli_run, "--objective", f"{changed}:good", "--out", out)
    assert_input_error(res, "objs.py:good differs from the file the run was fitted with", "--objective-changed")
    assert not out.exists()
    res = run("generate", cli_run, "--objective", f"{changed}:good", "--objective-changed", "--top-k", "2", "--out", out)
    assert res.exit_code == 0, res.output
    assert pd.read_csv(out)["score"].notna().all()


def test_generate_without_the_objective_uses_the_generator_and_says_so(cli_run, tmp_path):
    out = tmp_path / "c.csv"
    res = run("generate", cli_run, "--top-k", "2", "--out", out)
    assert res.exit_code == 0, res.output
    assert "note: no --objective (objs.py:good fitted this run)" in res.output
    assert "(0 objective calls)" in res.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["user", "t", "a", "b", "log_prob", "rank"]
    res = run("generate", cli_run, "--decoder", "rerank", "--out", tmp_path / "d.csv")
    assert_input_error(res, "--decoder", "rerank scores rows with the run's objective", "--objective")
    assert not (tmp_path / "d.csv").exists()


def test_score_on_an_objective_run_is_an_input_error(cli_run, files, tmp_path):
    res = run("score", cli_run, files / "contexts.csv", "--out", tmp_path / "s.csv")
    assert_input_error(res, str(cli_run))
    assert not (tmp_path / "s.csv").exists()


def test_score_on_an_objective_run_says_why(cli_run, files, tmp_path):
    res = run("score", cli_run, files / "contexts.csv", "--out", tmp_path / "s.csv")
    assert_input_error(res, "objective", "objs.py:good")


# --- 4. a table and an objective -------------------------------------------------------------------------

def test_a_table_warm_starts_from_its_best_rows_by_the_objective(files, tmp_path):
    """Each user's table holds its objective-best row and its measured-best row ten times each: with
    the warm start alone (no training steps) the generator proposes the first; the score column is
    never read, and a table without one fits too."""
    rng = np.random.default_rng(0)
    parts = []
    for user, t in zip(CONTEXTS.user, CONTEXTS.t):
        fav, other = ("p", "q") if user == "u1" else ("q", "p")
        best, worst = ("z", fav), ("x", other)       # by the objective; y says the opposite
        filler = [(SPACE["a"][i], SPACE["b"][j]) for i, j in zip(rng.integers(0, 3, 30), rng.integers(0, 2, 30))]
        filler = [r for r in filler if r not in (best, worst)]
        rows = [best] * 10 + [worst] * 10 + filler
        y = [-5.0] * 10 + [5.0] * 10 + [0.0] * len(filler)
        parts.append(pd.DataFrame(rows, columns=["a", "b"]).assign(user=user, t=t, y=y))
    table = pd.concat(parts, ignore_index=True)
    rec = Recorder()
    fit = cg.GeneratorFit(steps=0, warm_start_steps=60, val_samples=4)
    fitted = cg.Run.fit_objective(cg.FrameObjective(rec), tmp_path / "run",
                                  table=(table, cg.TableSpec(features=["a", "b"], score="y", context=["user", "t"])),
                                  force_generator=True, generator_fit=fit, echo=lambda m: None, progress=False)
    first = rec.frames[0]                                    # the table's rows, scored by the objective
    assert len(first) == len(table) and "y" not in first.columns
    assert best_rows(fitted.generate(k=1, decoder="argmax")) == {"u1": ("z", "p"), "u2": ("z", "q")}
    assert sorted(fitted.contexts.user) == ["u1", "u2"]     # the table's contexts, none given
    # the command line, with a table that has no score column
    table.drop(columns="y").to_csv(tmp_path / "table.csv", index=False)
    res = run("fit", tmp_path / "table.csv", "--features", "a", "--features", "b", "--context", "user",
              "--context", "t", "--objective", f"{files / 'objs.py'}:good", "--out", tmp_path / "cli",
              "--force-generator", "--steps", "0")
    assert res.exit_code == 0, res.output
    out = tmp_path / "cands.csv"
    res = run("generate", tmp_path / "cli", "--decoder", "argmax", "--top-k", "1", "--out", out)
    assert res.exit_code == 0, res.output
    assert best_rows(pd.read_csv(out)) == {"u1": ("z", "p"), "u2": ("z", "q")}


def test_a_users_net_where_a_fitted_scorer_is_expected_is_named_with_the_way_forward(potts_frame):
    """seed 000's first tries: fit_table_generator(net, table) and TableObjective(net) say what they
    expect and how to use a torch model instead, not an AttributeError from inside."""
    import choicegrad as cg

    net = torch.nn.Linear(3, 1)
    table = cg.load_table(potts_frame, "s?", "y", "ctx")
    for call, name in ((lambda: cg.fit_table_generator(net, table), "fit_table_generator"),
                       (lambda: cg.TableObjective(net), "TableObjective")):
        with pytest.raises(cg.InputError) as err:
            call()
        assert name in str(err.value) and "Linear" in str(err.value) and "ModuleObjective" in str(err.value)
