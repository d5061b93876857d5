"""Item lists as a run, end to end: `choicegrad fit LOG --slots ...`, `generate --items --lists`, `score`
on slates, and Run.fit_objective(..., items=ItemSpec(...)) with a reward of one's own. Slates from
items and lists never seen, distinct items, eligibility, fixed items, lists of one item and of 200,
contexts without lists; every bad input exits 2 naming the file, the column and the rows, and leaves
nothing behind; a run folder's refit rules as for a table run.

The tables are tiny (40 items with two numbers and a category, 400 log rows, 3 users) and the fits
short (30 generator steps), so each fit takes a few seconds on one thread."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cli_helpers import assert_input_error, run as cli

from choicegrad.errors import InputError
from choicegrad.items import ItemSpec
from choicegrad.run import Run
from choicegrad.training.loop import GeneratorFit

SLOTS = ["left", "middle", "right"]
USERS = ["ann", "bob", "cid"]
ITEM = ["--slots", ",".join(SLOTS), "--item-id", "id", "--context", "user", "--score", "y"]
FAST = ["--steps", "30", "--scorer-epochs", "3", "--seed", "0"]
COMMON = "n4"          # an item in every list of new_lists.csv
ONLY_ANN = "n1"        # an item in ann's lists of new_lists.csv only


def item_table(ids, rng, types=("a", "b", "c")) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame({"id": ids, "price": rng.uniform(0, 10, n).round(2), "quality": rng.normal(size=n).round(3),
                         "type": [types[j % len(types)] for j in range(n)]})


@contextmanager
def once(folder, name: str):
    """Hold an exclusive lock named `name` in `folder`: the pytest-xdist workers share the tables and
    the fitted runs (the first to get the lock makes them; the other finds them made)."""
    with open(folder / f"{name}.fixture-lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The tables, as files in one folder: items.csv (i00..i39), log.csv (400 rows), lists.csv (2 lists
    of 8 items per user, named by "list"), new_items.csv (n0..n9, types a and b), new_lists.csv (3 lists
    of new and old items, each holding COMMON and a type-a item; ONLY_ANN only in ann's). One folder for
    every xdist worker of the session."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "items_run"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    items = item_table([f"i{j:02d}" for j in range(40)], rng)
    log = pd.DataFrame({"user": rng.choice(USERS, 400)})
    for slot in SLOTS:
        log[slot] = rng.choice(items["id"], 400)
    by_id = items.set_index("id")
    log["y"] = (2 * by_id.quality[log.left].to_numpy() + by_id.quality[log.middle].to_numpy()
                - 0.1 * by_id.price[log.right].to_numpy() + 0.3 * (log.user == "bob") + 0.1 * rng.normal(size=400))
    lists = pd.DataFrame([(u, f"L{u}{k}", i) for u in USERS for k in range(2)
                          for i in rng.choice(items["id"], 8, replace=False)], columns=["user", "list", "id"])
    new_items = item_table([f"n{j}" for j in range(10)], rng, types=("a", "b"))
    new_lists = pd.DataFrame(
        [("ann", "Nann", i) for i in ["n0", ONLY_ANN, "n2", COMMON, "i00", "i05", "i10", "i11"]]
        + [("ann", "Nann2", i) for i in [COMMON, ONLY_ANN, "n6", "i03", "i06", "i07"]]
        + [("bob", "Nbob", i) for i in ["n9", COMMON, "n6", "n0", "i15", "i30", "i01", "i22"]],
        columns=["user", "list", "id"])
    paths = {}
    with once(folder, "tables"):
        for name, frame in (("items", items), ("log", log), ("lists", lists), ("new_items", new_items),
                            ("new_lists", new_lists)):
            paths[name] = folder / f"{name}.csv"
            if not paths[name].exists():
                frame.to_csv(paths[name], index=False)
    types = pd.concat([items, new_items]).set_index("id")["type"]
    return SimpleNamespace(folder=folder, items=items, log=log, lists=lists, new_items=new_items, new_lists=new_lists,
                           types=types, **{f"{k}_csv": v for k, v in paths.items()})


@pytest.fixture(scope="module")
def run_lists(data):
    """An item run on lists named by user and "list" (items may repeat in a slate)."""
    out = data.folder / "run_lists"
    with once(data.folder, out.name):
        if not out.exists():
            res = cli("fit", data.log_csv, *ITEM, "--items", data.items_csv, "--lists", data.lists_csv, "--list-id",
                      "list", *FAST, "--out", out)
            assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def run_distinct(data):
    """An item run on the whole catalogue per user, distinct items, the left slot only type a."""
    out = data.folder / "run_distinct"
    with once(data.folder, out.name):
        if not out.exists():
            res = cli("fit", data.log_csv, *ITEM, "--items", data.items_csv, "--distinct-items", "--eligible",
                      "left=type:a", *FAST, "--out", out)
            assert res.exit_code == 0, res.output
    return out


def members(lists: pd.DataFrame, keys: list[str]) -> dict[tuple, set]:
    return {key if isinstance(key, tuple) else (key,): set(group["id"]) for key, group in lists.groupby(keys)}


def check_slates(slates: pd.DataFrame, lists: dict[tuple, set], keys: list[str], k: int, distinct: bool = False):
    """Every list k slates ranked 1..k, best first, each slate's items from its list."""
    assert list(slates.columns) == [*keys, *SLOTS, "predicted", "rank"]
    assert np.isfinite(slates["predicted"]).all()
    got = {key if isinstance(key, tuple) else (key,): g for key, g in slates.groupby(keys, sort=False)}
    assert set(got) == set(lists)
    for key, group in got.items():
        assert group["rank"].tolist() == list(range(1, k + 1)), key
        assert (np.diff(group["predicted"].to_numpy()) <= 1e-9).all(), key
        for row in group[SLOTS].itertuples(index=False):
            assert set(row) <= lists[key], (key, row)
            if distinct:
                assert len(set(row)) == len(SLOTS), (key, row)
        assert not group[SLOTS].duplicated().any(), key                       # k different slates


# --- 1. end to end on the command line, and the same from Python ---------------------------------
def test_fit_generate_score_end_to_end(data, run_lists, tmp_path):
    assert {"items.json", "items.csv", "lists.csv", "scorer.json", "generator.json", "run.json"} <= \
        {p.name for p in run_lists.iterdir()}
    record = json.loads((run_lists / "items.json").read_text())
    assert record["slots"] == SLOTS and record["list_id"] == "list" and not record["distinct"]

    out = tmp_path / "slates.csv"
    res = cli("generate", run_lists, "--items", data.new_items_csv, "--lists", data.new_lists_csv, "--top-k", 3,
              "--out", out)
    assert res.exit_code == 0, res.output
    assert "generated 9 slates for 3 list(s)" in res.output
    slates = pd.read_csv(out)
    check_slates(slates, members(data.new_lists, ["user", "list"]), ["user", "list"], 3)

    res = cli("score", run_lists, out, "--items", data.new_items_csv, "--out", tmp_path / "scored.csv")
    assert res.exit_code == 0, res.output
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert list(scored.columns) == list(slates.columns)
    # float32 models: the same slate scored in another batch may differ in its last bit (relative 1e-7)
    np.testing.assert_allclose(scored["predicted"], slates["predicted"], rtol=1e-6, atol=1e-6)

    run = Run.load(run_lists)
    frame = run.generate(items=data.new_items_csv, lists=data.new_lists, k=3)
    assert frame.attrs["contexts"] == 3 and frame.attrs["short"] == 0
    assert frame.drop(columns="predicted").astype(str).equals(slates.drop(columns="predicted").astype(str))
    np.testing.assert_allclose(frame["predicted"], slates["predicted"], rtol=0, atol=1e-9)
    again = run.score(frame.drop(columns="predicted"), items=data.new_items)
    np.testing.assert_allclose(again["predicted"], frame["predicted"], rtol=1e-6, atol=1e-6)

    # without lists: the training lists, as the run folder keeps them
    train = run.generate(k=2, decoder="topk")
    check_slates(train, members(data.lists, ["user", "list"]), ["user", "list"], 2)


# --- 2. distinct items, eligibility, fixed items -------------------------------------------------
@pytest.mark.parametrize("decoder", ["polish", "exhaustive", "argmax", "sample"])
def test_distinct_items_and_eligibility(data, run_distinct, decoder):
    run = Run.load(run_distinct)
    lists = data.new_lists.drop(columns="list").drop_duplicates()    # the run's lists are keyed by user alone
    slates = run.generate(items=data.new_items, lists=lists, k=4, decoder=decoder)
    check_slates(slates, members(data.new_lists, ["user"]), ["user"], 4, distinct=True)
    assert (data.types[slates["left"]] == "a").all()
    assert slates.attrs["short"] == 0


def test_min_distance_is_for_a_tables_run_only(data, run_distinct):
    with pytest.raises(InputError, match="rows a distance apart are chosen for a table's runs"):
        Run.load(run_distinct).generate(lists=data.new_lists.drop(columns="list").drop_duplicates(), k=4, min_distance=2)


def test_distinct_items_fill_a_list_of_exactly_the_slots(data, run_distinct):
    """A list of 3 items for 3 slots, the left one type a: exactly 2 slates of distinct items exist."""
    a, others = data.items.id[data.items.type == "a"].iloc[0], data.items.id[data.items.type != "a"].iloc[:2]
    lists = pd.DataFrame({"user": "cid", "id": [a, *others]})
    slates = Run.load(run_distinct).generate(lists=lists, k=10, decoder="argmax")
    assert len(slates) == 2 and slates.attrs["short"] == 1
    assert (slates["left"] == a).all() and {tuple(r) for r in slates[["middle", "right"]].to_numpy()} == \
        {tuple(others), tuple(others[::-1])}


@pytest.mark.parametrize("which", ["run_lists", "run_distinct"])
def test_fix_puts_the_item_in_every_slate(data, which, request, tmp_path):
    run_dir = request.getfixturevalue(which)
    out = tmp_path / "fixed.csv"
    res = cli("generate", run_dir, "--items", data.new_items_csv, "--lists", data.new_lists_csv, "--top-k", 3,
              "--fix", f"middle={COMMON}", "--out", out)
    assert res.exit_code == 0, res.output
    slates = pd.read_csv(out)
    assert len(slates) == 3 * (3 if which == "run_lists" else 2) and (slates["middle"] == COMMON).all()
    if which == "run_distinct":
        assert not ((slates["left"] == COMMON) | (slates["right"] == COMMON)).any()
        assert (data.types[slates["left"]] == "a").all()

    res = cli("generate", run_dir, "--items", data.new_items_csv, "--lists", data.new_lists_csv,
              "--fix", f"right={ONLY_ANN}", "--out", tmp_path / "absent.csv")
    assert_input_error(res, "--fix", f'slot "right": item "{ONLY_ANN}" is not in 1 list(s)', "user=bob")
    assert not (tmp_path / "absent.csv").exists()


# --- 3. odd lists: one item, longer than any in training, contexts without lists ----------------
def test_one_item_list_and_a_200_item_list(data, run_lists, tmp_path):
    rng = np.random.default_rng(5)
    many = item_table([f"x{j:03d}" for j in range(160)], rng)
    lists = pd.DataFrame({"user": ["ann"] + ["bob"] * 200, "list": ["one"] + ["long"] * 200,
                          "id": ["i03", *many["id"], *data.items["id"]]})
    many.to_csv(tmp_path / "many.csv", index=False)
    lists.to_csv(tmp_path / "odd_lists.csv", index=False)
    out = tmp_path / "odd.csv"
    res = cli("generate", run_lists, "--items", tmp_path / "many.csv", "--lists", tmp_path / "odd_lists.csv",
              "--top-k", 3, "--out", out)
    assert res.exit_code == 0, res.output
    assert "warning: 1 list(s) got fewer than 3 slates" in res.output
    slates = pd.read_csv(out)
    one = slates[slates["list"] == "one"]
    assert one[SLOTS].values.tolist() == [["i03"] * 3] and one["rank"].tolist() == [1]
    long = slates[slates["list"] == "long"]
    check_slates(long, {("bob", "long"): set(lists["id"][1:])}, ["user", "list"], 3)
    run = Run.load(run_lists)
    for decoder in ("argmax", "sample", "topk"):
        frame = run.generate(items=many, lists=lists, k=3, decoder=decoder)
        assert len(frame) == 4 and frame.attrs["short"] == 1, decoder
        assert set(frame[frame["list"] == "long"][SLOTS].to_numpy().ravel()) <= set(lists["id"]), decoder


def test_contexts_without_lists_take_the_whole_catalogue(data, run_distinct, tmp_path):
    pd.DataFrame({"user": ["cid", "ann", "cid"]}).to_csv(tmp_path / "users.csv", index=False)
    out = tmp_path / "slates.csv"
    res = cli("generate", run_distinct, "--contexts", tmp_path / "users.csv", "--items", data.new_items_csv,
              "--top-k", 2, "--out", out)
    assert res.exit_code == 0, res.output
    slates = pd.read_csv(out)
    everything = set(data.items["id"]) | set(data.new_items["id"])
    check_slates(slates, {("cid",): everything, ("ann",): everything}, ["user"], 2, distinct=True)
    assert slates["user"].tolist() == ["cid", "cid", "ann", "ann"]
    assert (data.types[slates["left"]] == "a").all()
    # no contexts and no lists: each training user with the run's catalogue
    frame = Run.load(run_distinct).generate(k=1, decoder="argmax")
    assert sorted(frame["user"]) == USERS and set(frame[SLOTS].to_numpy().ravel()) <= set(data.items["id"])


# --- 4. bad inputs: exit 2, the file, column and rows named, nothing written ---------------------
def _unknown_log_item(d):
    log = d.log.copy()
    log.loc[[5, 17], "middle"] = "zz9"
    return {"log": log}


def _duplicate_id(d):
    items = d.items.copy()
    items.loc[7, "id"] = items.loc[3, "id"]
    return {"items": items}


def _missing_number(d):
    items = d.items.copy()
    items.loc[4, "quality"] = np.nan
    return {"items": items}


def _missing_category(d):
    items = d.items.astype({"type": object})
    items.loc[6, "type"] = None
    return {"items": items}


def _short_list(d):
    lists = d.lists
    drop = lists.index[(lists["list"] == "Lann0")][2:]
    return {"lists": lists.drop(drop)}


def _non_finite_score(d):
    log = d.log.copy()
    log.loc[[2, 9], "y"] = [np.nan, np.inf]
    return {"log": log}


def _unknown_list_item(d):
    return {"lists": pd.concat([d.lists, pd.DataFrame({"user": ["ann"], "list": ["Lann0"], "id": ["zz"]})])}


LISTED = ["--lists", "{lists}", "--list-id", "list"]
BAD_FITS = {
    "log-item-not-in-items": (_unknown_log_item, [], ["{log}", 'column "middle"', "'zz9'", "rows 6, 18",
                                                      "not in the items table"]),
    "duplicate-item-id": (_duplicate_id, [], ["{items}", 'column "id"', "duplicate item ids 'i03'", "rows 4, 8"]),
    "item-missing-number": (_missing_number, [], ["{items}", 'column "quality"', "row 5"]),
    "item-missing-category": (_missing_category, [], ["{items}", 'column "type"', "missing value at row 7"]),
    "list-shorter-than-slots": (_short_list, [*LISTED, "--distinct-items"],
                                ["{lists}", "fewer items than the 3 slots", "user=ann, list=Lann0"]),
    "lists-without-rows": (lambda d: {"lists": d.lists.head(0)}, LISTED, ["{lists}", "no rows"]),
    "list-item-not-in-items": (_unknown_list_item, LISTED, ["{lists}", 'column "id"', "'zz'", "row 49"]),
    "slot-column-missing": (lambda d: {"log": d.log.drop(columns="middle")}, [],
                            ["{log}", 'no log column "middle"', "columns: user, left, right, y"]),
    "eligible-unknown-slot": (lambda d: {}, ["--eligible", "lft=type:a"],
                              ["--eligible", 'unknown slot "lft" (did you mean "left"?)']),
    "eligible-unknown-attribute": (lambda d: {}, ["--eligible", "left=typ:a"],
                                   ["--eligible", '"typ" is not an item attribute (did you mean "type"?)']),
    "eligible-matches-no-item": (lambda d: {}, ["--eligible", "left=type:zzz"],
                                 ["--eligible", 'slot "left": no item of {items}', "type zzz"]),
    "eligible-malformed": (lambda d: {}, ["--eligible", "left=type"], ["--eligible", "expected SLOT=ATTRIBUTE:VALUE"]),
    "non-finite-score": (_non_finite_score, [], ["{log}", 'column "y"', "rows 3, 10"]),
    "list-id-without-lists": (lambda d: {}, ["--list-id", "list"], ["--list-id", "--lists"]),
    "lists-lack-context": (lambda d: {"lists": d.lists.drop(columns="user")}, LISTED,
                           ["{lists}", 'no lists column "user"']),
}


@pytest.mark.parametrize("case", list(BAD_FITS))
def test_bad_fit_inputs_exit_2_and_write_nothing(data, case, tmp_path):
    mutate, args, needles = BAD_FITS[case]
    tables = {"log": data.log, "items": data.items, "lists": data.lists, **mutate(data)}
    paths = {}
    for name, frame in tables.items():
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    args = [a.format(**paths) for a in args]
    res = cli("fit", paths["log"], *ITEM, "--items", paths["items"], *args, *FAST, "--out", tmp_path / "run")
    assert_input_error(res, *(n.format(**paths) for n in needles))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())   # no run, no partial


def test_fit_needs_the_items_and_refuses_item_flags_without_slots(data, tmp_path):
    res = cli("fit", data.log_csv, "--slots", "left,middle,right", "--score", "y", "--out", tmp_path / "run")
    assert_input_error(res, "--items: required with --slots")
    res = cli("fit", data.log_csv, "--features", "left", "--score", "y", "--items", data.items_csv,
              "--out", tmp_path / "run")
    assert_input_error(res, "--items: only with --slots")
    assert list(tmp_path.iterdir()) == []


def _write(frame_of, name):
    def make(d, folder):
        path = folder / name
        frame_of(d).to_csv(path, index=False)
        return path
    return make


def _lists_with_unknown(d):
    lists = d.new_lists.copy()
    lists.loc[3, "id"] = "qq"
    return lists


def _slates_with_unknown(d):
    return pd.DataFrame({"user": ["ann"] * 3, "list": "Lann0", "left": ["i01", "i02", "zz"], "middle": "i03",
                         "right": "i04"})


def _attribute_not_a_number(d):
    items = d.new_items.astype({"price": object})
    items.loc[1, "price"] = "cheap"
    return items


NEW_ITEMS = ["--items", "{new_items}"]
BAD_USES = {
    "lists-item-not-in-items": ("run_lists", "generate", [*NEW_ITEMS, "--lists", "{bad}"],
                                _write(_lists_with_unknown, "l.csv"),
                                ["{bad}", 'column "id"', "'qq'", "row 4", "not in the items table"]),
    "lists-new-items-not-given": ("run_lists", "generate", ["--lists", "{new_lists}"], None,
                                  ["{new_lists}", 'column "id"', "'n0'", "rows 1, 2, 3, 4, 9"]),
    "lists-without-rows": ("run_distinct", "generate", ["--lists", "{bad}"],
                           _write(lambda d: d.new_lists.head(0), "l.csv"), ["{bad}", "no rows"]),
    "list-shorter-than-slots": ("run_distinct", "generate", [*NEW_ITEMS, "--lists", "{bad}"],
                                _write(lambda d: pd.concat([d.new_lists[d.new_lists.user == "bob"],
                                                            d.new_lists[d.new_lists.user == "ann"].head(2)]), "l.csv"),
                                ["{bad}", "fewer items than the 3 slots", "user=ann"]),
    "list-without-eligible-item": ("run_distinct", "generate", ["--lists", "{bad}"],
                                   _write(lambda d: pd.DataFrame({"user": "bob",
                                                                  "id": d.items.id[d.items.type != "a"]}), "l.csv"),
                                   ["{bad}", 'no item eligible for slot "left"', "user=bob"]),
    "contexts-without-rows": ("run_distinct", "generate", ["--contexts", "{bad}"],
                              _write(lambda d: pd.DataFrame({"user": []}), "c.csv"), ["{bad}", "no rows"]),
    "contexts-wrong-column": ("run_distinct", "generate", ["--contexts", "{bad}"],
                              _write(lambda d: pd.DataFrame({"usr": ["ann"]}), "c.csv"),
                              ["{bad}", 'no context column "user" (did you mean "usr"?)']),
    "contexts-unknown-user": ("run_distinct", "generate", ["--contexts", "{bad}"],
                              _write(lambda d: pd.DataFrame({"user": ["ann", "zed"]}), "c.csv"),
                              ["{bad}", 'context column "user"', "'zed' at row 2"]),
    "contexts-for-named-lists": ("run_lists", "generate", ["--contexts", "{bad}"],
                                 _write(lambda d: pd.DataFrame({"user": ["ann"]}), "c.csv"), ["--contexts", '"list"',
                                                                                              "--lists"]),
    "items-attribute-not-a-number": ("run_lists", "generate", ["--items", "{bad}", "--lists", "{new_lists}"],
                                     _write(_attribute_not_a_number, "i.csv"), ["{bad}", 'column "price"', "row 2"]),
    "items-attribute-missing": ("run_lists", "generate", ["--items", "{bad}", "--lists", "{new_lists}"],
                                _write(lambda d: d.new_items.drop(columns="type"), "i.csv"),
                                ["{bad}", 'no column "type"']),
    "fix-unknown-item": ("run_distinct", "generate", ["--fix", "middle=nope"], None, ["--fix", 'no item "nope"']),
    "fix-unknown-slot": ("run_distinct", "generate", ["--fix", "mid=i01"], None,
                         ["--fix", 'unknown slot "mid" (did you mean "middle"?)']),
    "fix-not-eligible": ("run_distinct", "generate", ["--fix", "left=i01"], None,    # i01 is of type b
                         ["--fix", 'slot "left": item "i01" is not eligible']),
    "fix-one-item-twice": ("run_distinct", "generate", ["--fix", "left=i00", "--fix", "right=i00"], None,
                           ["--fix", 'item "i00" fixed in slots left, right', "distinct"]),
    "objective-flag": ("run_lists", "generate", ["--objective", "x.py:f"], None, ["--objective", "Run.use_objective"]),
    "score-item-not-in-items": ("run_lists", "score", ["{bad}"], _write(_slates_with_unknown, "s.csv"),
                                ["{bad}", 'column "left"', "'zz'", "row 3"]),
    "score-slot-column-missing": ("run_lists", "score", ["{bad}"],
                                  _write(lambda d: _slates_with_unknown(d).drop(columns="right"), "s.csv"),
                                  ["{bad}", 'no slate column "right"']),
}


@pytest.mark.parametrize("case", list(BAD_USES))
def test_bad_generate_and_score_inputs_exit_2_and_write_nothing(data, case, request, tmp_path):
    which, command, args, make, needles = BAD_USES[case]
    run_dir = request.getfixturevalue(which)
    paths = {"new_items": data.new_items_csv, "new_lists": data.new_lists_csv}
    if make is not None:
        paths["bad"] = make(data, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(**paths) for a in args]
    res = cli(command, run_dir, *args, "--out", tmp_path / "out.csv")
    assert_input_error(res, *(n.format(**paths) for n in needles))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --- 5. a reward of one's own: pick the item whose first attribute is 5 -------------------------
def five_lists(n: int, lengths: tuple[int, int], fives: list[str], others: list[str], seed: int, prefix: str):
    """n lists, each of one item valued 5 among others, in random order."""
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(n):
        chosen = [*rng.choice(others, rng.integers(*lengths) - 1, replace=False), rng.choice(fives)]
        rng.shuffle(chosen)
        rows += [(f"{prefix}{j}", item) for item in chosen]
    return pd.DataFrame(rows, columns=["list", "id"])


def pick_five(selected, ctx):
    """(N, S, D) chosen items' vectors -> (N,): 0 when every slot holds a 5 (attribute "value" comes first)."""
    return -(selected[..., 0] - 5.0).abs().sum(-1)


def test_own_reward_over_items_picks_the_five_on_unseen_lists(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.choice([0, 1, 2, 3, 4, 6, 7, 8, 9, 10], 40).astype(float)
    values[::5] = 5.0
    items = pd.DataFrame({"id": [f"i{j:02d}" for j in range(40)], "value": values,
                          "weight": rng.normal(size=40).round(3), "type": rng.choice(["a", "b"], 40)})
    fives, others = list(items.id[values == 5]), list(items.id[values != 5])
    train = five_lists(40, (4, 11), fives, others, seed=1, prefix="T")
    spec = ItemSpec(slots="a,b,c", items=items, lists=train, list_id="list")
    notes = []
    run = Run.fit_objective(pick_five, tmp_path / "own", items=spec, generator_fit=GeneratorFit(steps=60, seed=0),
                            progress=False, echo=notes.append)
    assert any("objective: scale" in n for n in notes)
    record = json.loads((tmp_path / "own" / "items.json").read_text())
    assert record["objective"]["name"] and record["score"] is None and not (tmp_path / "own" / "scorer.json").exists()

    # lists never seen, up to 25 items, with new items too: every slot takes a 5
    new_items = pd.DataFrame({"id": ["n0", "n1", "n2"], "value": [5.0, 3.0, 7.0], "weight": 0.0, "type": "a"})
    unseen = five_lists(60, (8, 26), [*fives, "n0"], [*others, "n1", "n2"], seed=2, prefix="N")
    value = pd.concat([items, new_items]).set_index("id")["value"]
    slates = run.generate(items=new_items, lists=unseen, k=1, decoder="argmax")
    assert len(slates) == 60 and list(slates.columns) == ["list", "a", "b", "c", "predicted", "rank"]
    assert (value[slates[["a", "b", "c"]].to_numpy().ravel()] == 5).mean() >= 0.98
    assert slates["predicted"].max() == 0.0

    # loaded from its folder the run holds no reward: the generator alone, or the reward given again
    loaded = Run.load(tmp_path / "own")
    alone = loaded.generate(items=new_items, lists=unseen, k=1, decoder="argmax")
    assert "log_prob" in alone.columns and alone[["a", "b", "c"]].equals(slates[["a", "b", "c"]])
    with pytest.raises(InputError, match="decoder polish scores slates with the reward"):
        loaded.generate(items=new_items, lists=unseen, k=2)
    with pytest.raises(InputError, match="no scorer"):
        loaded.score(slates)
    # the command line, without the reward: the generator alone, said so
    new_items.to_csv(tmp_path / "new_items.csv", index=False)
    unseen.to_csv(tmp_path / "unseen.csv", index=False)
    res = cli("generate", tmp_path / "own", "--items", tmp_path / "new_items.csv", "--lists", tmp_path / "unseen.csv",
              "--top-k", 1, "--out", tmp_path / "alone.csv")
    assert res.exit_code == 0, res.output
    assert "note: the run was fitted to a reward of your own" in res.output and "topk" in res.output
    cli_alone = pd.read_csv(tmp_path / "alone.csv")
    assert "log_prob" in cli_alone.columns
    assert (value[cli_alone[["a", "b", "c"]].to_numpy().ravel()] == 5).mean() >= 0.98
    best = loaded.use_objective(pick_five).generate(items=new_items, lists=unseen, k=2, decoder="exhaustive")
    assert list(best.columns) == list(slates.columns) and len(best) == 120
    assert (best[best["rank"] == 1]["predicted"] == 0).all() and (best[best["rank"] == 2]["predicted"] < 0).all()


# --- 6. a run folder's rules: refused without --overwrite, resumed only as it was ----------------
def test_refit_is_refused_without_overwrite(data, run_lists, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_lists, out)
    sealed = (out / "run.json").read_bytes()
    args = ["fit", data.log_csv, *ITEM, "--items", data.items_csv, "--lists", data.lists_csv, "--list-id", "list"]
    res = cli(*args, *FAST, "--out", out)
    assert_input_error(res, str(out), "already holds a run; pass --overwrite")
    assert (out / "run.json").read_bytes() == sealed

    res = cli(*args, *FAST, "--out", out, "--resume")                 # the same fit: nothing to do
    assert res.exit_code == 0, res.output
    assert "nothing to resume" in res.output and (out / "run.json").read_bytes() == sealed

    changed = tmp_path / "items.csv"
    data.items.assign(price=data.items.price + 1).to_csv(changed, index=False)
    res = cli("fit", data.log_csv, *ITEM, "--items", changed, "--lists", data.lists_csv, "--list-id", "list", *FAST,
              "--out", out, "--resume")                                 # other tables: not this run
    assert_input_error(res, "other settings")
    assert (out / "run.json").read_bytes() == sealed

    res = cli(*args, "--steps", "5", "--scorer-epochs", "2", "--out", out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert (out / "run.json").read_bytes() != sealed
    assert json.loads((out / "config.json").read_text())["generator_fit"]["steps"] == 5
    assert len(Run.load(out).generate(k=1, decoder="argmax")) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.csv", "run"]     # no partial or lock left

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    res = cli(*args, *FAST, "--out", tmp_path / "other", "--overwrite")
    assert_input_error(res, "is not a choicegrad run folder")
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("name", ["items.json", "items.csv", "lists.csv"])
def test_a_changed_item_table_of_a_run_is_refused(data, run_lists, tmp_path, name):
    """An item run's items record, catalogue and lists are checked against run.json as its weights
    are: a run whose items.csv was edited never generates from the edited items."""
    out = tmp_path / "run"
    shutil.copytree(run_lists, out)
    with open(out / name, "a") as fh:
        fh.write("\n" if name.endswith(".json") else "")
        if name.endswith(".csv"):
            fh.write(",".join(["x"] * len(pd.read_csv(out / name, nrows=1).columns)) + "\n")
    res = cli("generate", out, "--top-k", "1", "--out", tmp_path / "slates.csv")
    assert_input_error(res, name, "does not belong to run")
    assert not (tmp_path / "slates.csv").exists()


def test_list_pool_synthetic_items_keep_category_blocks_whole():
    """ListPool(synthetic=p): about p of the training draws' items are made up attribute by attribute
    from catalogue items (a one-hot block copied whole, so still one-hot); validation is never
    changed, and p = 0 draws exactly what it drew before."""
    import torch
    from choicegrad.data.items import ItemLists
    from choicegrad.training.contexts import ListPool

    rng = np.random.default_rng(0)
    M = 50
    onehot = np.eye(3)[rng.integers(0, 3, M)]
    vectors = torch.tensor(np.concatenate([rng.normal(size=(M, 2)), onehot], 1), dtype=torch.float32)
    blocks = [(0, 1), (1, 2), (2, 5)]
    lists = ItemLists(pd.DataFrame({"list": range(20)}), np.tile(np.arange(10), 20), np.arange(21) * 10)
    cat, num = torch.zeros(20, 0, dtype=torch.long), torch.zeros(20, 0)
    plain = ListPool(lists, vectors, cat, num, 3)
    same = ListPool(lists, vectors, cat, num, 3, synthetic=0.0, blocks=blocks)
    mixed = ListPool(lists, vectors, cat, num, 3, synthetic=0.5, blocks=blocks)
    a = plain.sample(64, torch.Generator().manual_seed(1))
    assert torch.equal(a.items, same.sample(64, torch.Generator().manual_seed(1)).items)
    assert torch.equal(plain.validation().items, mixed.validation().items)
    b = mixed.sample(64, torch.Generator().manual_seed(1))
    real = b.items[b.mask]
    known = (real[:, None, :] == vectors[None]).all(-1).any(1)
    assert 0.3 < 1 - known.float().mean() < 0.6            # made-up items: no catalogue item has them
    assert torch.equal(real[:, 2:].sum(1), torch.ones(len(real)))    # the category one-hot stays whole
    for col in range(2):                                    # every number is some catalogue item's
        assert bool((real[:, col:col + 1] == vectors[None, :, col]).any(1).all())
