"""SlateDesigner: ask/tell rounds over slates of item lists."""

import numpy as np
import pandas as pd
import pytest

from choicegrad.design.slates import SlateDesigner
from choicegrad.errors import InputError
from choicegrad.items import ItemSpec
from choicegrad.training.loop import GeneratorFit


def _world(seed=0):
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"id": [f"i{j}" for j in range(30)], "x": rng.normal(size=30), "z": rng.normal(size=30)})
    lists = pd.DataFrame([(u, f"i{j}") for u in ("ann", "bob") for j in rng.choice(30, 10, replace=False)],
                         columns=["user", "id"])
    return items, lists


def _truth(frame, items):
    x = items.set_index("id")["x"]
    return x[frame["a"]].to_numpy() + x[frame["b"]].to_numpy()


def test_rounds_propose_new_slates_with_uncertainty(tmp_path):
    items, lists = _world()
    rng = np.random.default_rng(1)
    first = pd.DataFrame([(u, *rng.choice(lists[lists.user == u].id, 2)) for u in ("ann", "bob") for _ in range(20)],
                         columns=["user", "a", "b"])
    spec = ItemSpec(slots="a,b", items=items, context="user", score="y", lists=lists)
    designer = SlateDesigner(spec, tmp_path / "rounds", ensemble=2, generator_fit=GeneratorFit(steps=30))
    with pytest.raises(InputError, match="nothing measured"):
        designer.ask(4)
    designer.tell(first, scores=_truth(first, items))
    batch = designer.ask(4)
    assert set(batch.columns) >= {"user", "a", "b", "predicted", "uncertainty", "rank"}
    assert (batch.groupby("user").size() == 4).all()
    told = set(map(tuple, first[["user", "a", "b"]].to_numpy()))
    assert not told & set(map(tuple, batch[["user", "a", "b"]].to_numpy()))      # never proposed again
    assert (batch["uncertainty"] >= 0).all() and batch["uncertainty"].gt(0).any()
    allowed = lists.groupby("user")["id"].apply(set)
    assert all(r.a in allowed[r.user] and r.b in allowed[r.user] for r in batch.itertuples())
    designer.tell(batch.drop(columns=["predicted", "uncertainty", "rank"]), scores=_truth(batch, items))
    second = designer.ask(4)
    assert not set(map(tuple, batch[["user", "a", "b"]].to_numpy())) & set(map(tuple, second[["user", "a", "b"]].to_numpy()))
    assert designer.rounds == 2 and (tmp_path / "rounds" / "round-1" / "run.json").is_file()
