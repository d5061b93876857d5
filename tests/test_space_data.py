import numpy as np
import pandas as pd
import pytest
import torch

from choicegrad import MISSING, ChoiceSpace, InputError, load_table
from choicegrad.data.context import ContextEncoder
from choicegrad.data.split import split_below_quantile
from choicegrad.data.space import as_labels


def test_vocabularies_are_sorted_and_file_order_free(potts_frame):
    a = load_table(potts_frame, "s0,s1,s2", "y", "ctx")
    b = load_table(potts_frame.iloc[::-1].reset_index(drop=True), "s0,s1,s2", "y", "ctx")
    assert a.space == b.space
    assert a.space.slots[0].categories == sorted(a.space.slots[0].categories)


def test_glob_features_keep_column_order(potts_frame):
    t = load_table(potts_frame, "s?", "y", "ctx")
    assert t.space.names == ["s0", "s1", "s2"]


def test_missing_values_are_masked_not_invented():
    frame = pd.DataFrame({"a": ["x", None, "y", "x"], "b": ["p", "q", np.nan, "q"], "y": [1.0, 2.0, 3.0, 4.0]})
    t = load_table(frame, "a,b", "y")
    assert t.rows.tolist() == [[0, 0], [MISSING, 1], [1, MISSING], [0, 1]]
    assert t.space.sizes == [2, 2]  # no "missing" category added to the vocabulary


def test_integer_labels_survive_gaps():
    labels = as_labels(pd.Series([1.0, 2.0, np.nan]))
    assert labels.tolist() == ["1", "2", None]


def test_encode_rejects_unknown_categories_with_rows():
    space = ChoiceSpace.from_frame(pd.DataFrame({"a": ["x", "y"]}), ["a"])
    with pytest.raises(InputError, match=r'unknown category .z. at row 2'):
        space.encode(pd.DataFrame({"a": ["x", "z"]}), "new.csv")


def test_decode_inverts_encode(potts_frame):
    t = load_table(potts_frame, "s?", "y", "ctx")
    back = t.space.decode(t.rows)
    assert (back.to_numpy() == potts_frame[["s0", "s1", "s2"]].to_numpy()).all()


def test_space_mask_marks_padding():
    space = ChoiceSpace.from_frame(pd.DataFrame({"a": ["x", "y", "z"], "b": ["p", "q", "p"]}), ["a", "b"])
    assert space.mask().tolist() == [[True, True, True], [True, True, False]]
    assert space.num_rows() == 6


def test_context_detection_and_override():
    frame = pd.DataFrame({"u": ["a", "b", "a"], "v": [1.0, 2.0, 3.0], "w": [1, 2, 1], "f": ["x", "y", "z"], "y": [1.0, 2.0, 3.0]})
    t = load_table(frame, "f", "y", "u,v,w:cat")
    kinds = {c.name: c.kind for c in t.context.columns}
    assert kinds == {"u": "categorical", "v": "numeric", "w": "categorical"}
    assert t.ctx_cat.tolist() == [[0, 0], [1, 1], [0, 0]]
    num = t.ctx_num[:, 0].numpy()
    assert np.allclose(num, (np.array([1, 2, 3]) - 2) / np.std([1, 2, 3]))


def test_context_encoder_rejects_unknown_and_missing():
    enc = ContextEncoder.fit(pd.DataFrame({"u": ["a", "b"], "v": [0.0, 1.0]}), [("u", None), ("v", None)])
    with pytest.raises(InputError) as err:
        enc.encode(pd.DataFrame({"u": ["a", "zz", None], "v": [0.0, np.inf, 1.0]}), "ctx.csv")
    text = str(err.value)
    assert "unknown value 'zz' at row 2" in text and "missing value at row 3" in text and "inf at row 2" in text


def test_numeric_override_on_text_is_an_input_error():
    frame = pd.DataFrame({"u": ["a", "b"], "f": ["x", "y"], "y": [1.0, 2.0]})
    with pytest.raises(InputError, match="context"):
        load_table(frame, "f", "y", "u:num")


def test_every_problem_reported_at_once():
    frame = pd.DataFrame({"colour": ["r", "g"], "size": ["s", "s"], "y": ["1", "oops"]})
    with pytest.raises(InputError) as err:
        load_table(frame, "color,size", "yy", "ctx")
    problems = err.value.problems
    assert any('"color" not found (did you mean "colour"?)' in p for p in problems)
    assert any('"yy" not found (did you mean "y"?)' in p for p in problems)
    assert any('"ctx" not found' in p for p in problems)


def test_score_problems_name_rows():
    frame = pd.DataFrame({"f": ["x", "y", "x", "y"], "y": [1.0, np.nan, "abc", np.inf]})
    with pytest.raises(InputError, match="rows 2, 3, 4"):
        load_table(frame, "f", "y")


def test_single_category_feature_warns():
    frame = pd.DataFrame({"f": ["x", "y"], "g": ["k", "k"], "y": [1.0, 2.0]})
    with pytest.warns(UserWarning, match='"g" has a single category'):
        t = load_table(frame, "f,g", "y")
    assert t.space.sizes == [2, 1]


def test_split_below_quantile_is_per_context(potts_frame):
    t = load_table(potts_frame, "s?", "y", "ctx")
    below, upper = split_below_quantile(t, 0.5)
    groups = t.context_groups()
    for g in np.unique(groups):
        ys_below = t.y[below][groups[below] == g]
        ys_upper = t.y[upper][groups[upper] == g]
        assert ys_below.max() < ys_upper.min()
    assert len(below) + len(upper) == len(t)
    with pytest.raises(InputError, match="--train-quantile"):
        split_below_quantile(t, 1.5)


def test_subset_keeps_alignment(potts_frame):
    t = load_table(potts_frame, "s?", "y", "ctx")
    s = t.subset(np.array([5, 2]))
    assert torch.equal(s.rows, t.rows[[5, 2]]) and torch.equal(s.y, t.y[[5, 2]])
    assert s.frame["y"].tolist() == potts_frame["y"].iloc[[5, 2]].tolist()


def test_many_labels_take_the_vectorised_path_with_label_of_results():
    """Over 1,000 distinct values as_labels skips label_of for plain text; the labels are label_of's."""
    import random

    from choicegrad.data.space import _labels_of, label_of

    rng = random.Random(0)
    alphabet = ["a", "x", "0", "7", "+", "-", ".", "e", "E", " ", "true", "False", "NA", "1e3", "\t", "nan", "inf", "_"]
    values = list(dict.fromkeys("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))) for _ in range(6000)))
    values += [3, 2.5, float("nan"), None, True]
    uniques = np.array(values, dtype=object)
    assert _labels_of(uniques) == [label_of(v) for v in uniques]
