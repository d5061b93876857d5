"""Your own score model as the objective a generator maximises: no scorer fitted, no table needed.

Two kinds, both scoring rows of a declared choice space in its own labels:

    def simulate(frame: pandas.DataFrame) -> numpy.ndarray:     # a black box: any model, a simulator
        ...                                                     # frame: feature + context columns, labels
    objective = cg.FrameObjective(simulate)                     # trained by reinforce / trajectory-balance

    class Net(torch.nn.Module):                                 # differentiable: every estimator works
        def forward(self, features, context):                   # features["colour"]: (N, V) one-hot or soft,
            ...                                                 # in the space's label order; context["user"]:
    objective = cg.ModuleObjective(Net())                       # (N, C) one-hot, context["temp"]: (N,) values

    run = cg.Run.fit_objective(objective, "runs/own", space={"colour": ["red", "blue"], ...},
                               contexts=pd.DataFrame({"user": [...], "temp": [...]}))

An objective is bound to a choice space and context columns (`bind`) before use: labels are the
space's (a feature's categories in the order declared), context columns typed as a table's are
(numbers standardised inside, given back to the function as the numbers they were). Its `scale`,
the score's typical spread, is the user's or estimated from uniform random rows (estimate_scale),
and reported. On the command line `--objective FILE.py:NAME` names the function or module instance
(load_objective); a run folder records the file's name and sha256, and never imports it by itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from choicegrad.data.context import ContextEncoder
from choicegrad.data.space import ChoiceSpace
from choicegrad.errors import InputError, did_you_mean, show_rows
from choicegrad.generators.context import TableContext
from choicegrad.generators.objective import Objective

#: Contexts and rows per context that estimate an objective's scale when none is given.
SCALE_CONTEXTS, SCALE_ROWS = 32, 64


class _Bound(Objective):
    """What both user objectives share: the space and contexts they are bound to, and the labels,
    one-hot tensors and context values they hand the user's function."""

    def __init__(self, name: str, scale: Optional[float]):
        super().__init__()
        self.name = name
        self.scale = float(scale) if scale is not None else 1.0
        self.scale_given = scale is not None
        self.space: Optional[ChoiceSpace] = None
        self.context: Optional[ContextEncoder] = None
        self._raw: dict[bytes, np.ndarray] = {}

    def bind(self, space: ChoiceSpace, context: ContextEncoder, contexts: Optional[pd.DataFrame] = None) -> _Bound:
        """Bind to `space` and the context columns of `context`; `contexts` (a frame of those columns)
        lets numeric context values reach the function exactly as written, not rounded through float32."""
        self.space, self.context = space, context
        self._labels = [np.array(slot.categories, dtype=object) for slot in space.slots]
        if contexts is not None and context.numeric:
            cat, num = context.encode(contexts, "contexts")
            raw = contexts[[c.name for c in context.numeric]].to_numpy(dtype=np.float64)
            for key, value in zip(_keys(cat, num), raw):
                self._raw[key] = value
        return self

    def _need_bound(self) -> None:
        if self.space is None:
            raise InputError(self.name, ["the objective is not bound to a choice space yet: fit it through "
                                         "Run.fit_objective, or call objective.bind(space, context_encoder)"])

    def numeric_values(self, ctx: TableContext) -> np.ndarray:
        """(N, C_num) float64 numeric context values as the user gave them."""
        cols = self.context.numeric
        if not cols:
            return np.zeros((len(ctx), 0))
        num = ctx.num.detach().cpu()
        out = num.double().numpy() * np.array([c.std for c in cols]) + np.array([c.mean for c in cols])
        if self._raw:
            keys = _keys(ctx.cat.detach().cpu(), num)
            for i, key in enumerate(keys):
                raw = self._raw.get(key)
                if raw is not None:
                    out[i] = raw
        return out

    def hard(self, x: Tensor) -> Tensor:
        """(N, S) long rows from hard (N, S) or one-hot (N, S, V) rows."""
        return x if not x.is_floating_point() else x.argmax(-1)

    def check(self, values, n: int, x: Tensor, ctx: TableContext) -> Tensor:
        """The user's output as a (N,) tensor: InputError naming the function for another length, text,
        NaN or inf (with the rows, and the first one in labels)."""
        if isinstance(values, Tensor):
            numbers, result = values.detach().double().cpu().numpy(), values
        else:
            try:
                numbers = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(self.name, [f"returned {type(values).__name__} values that are not all numbers; "
                                             "expected one number per row"]) from None
            result = torch.as_tensor(numbers, dtype=torch.float32)
        if numbers.shape != (n,):
            raise InputError(self.name, [f"returned shape {numbers.shape} for {n} rows; expected one number per "
                                         f"row, shape ({n},)"])
        bad = np.flatnonzero(~np.isfinite(numbers))
        if len(bad):
            first = torch.as_tensor(bad[:1], device=x.device)
            example = self.frame(self.hard(x)[first], ctx.index(first)).iloc[0].to_dict()
            raise InputError(self.name, [f"returned {numbers[bad[0]]} at {show_rows(bad)} of a call of {n} rows, "
                                         f"e.g. for {example}; scores must be finite numbers"])
        return result

    def frame(self, rows: Tensor, ctx: TableContext) -> pd.DataFrame:
        """(N, S) long rows and their contexts as a DataFrame of labels (features, then context columns)."""
        idx = rows.detach().cpu().numpy()
        data = {slot.name: self._labels[s][idx[:, s]] for s, slot in enumerate(self.space.slots)}
        cat = ctx.cat.detach().cpu().numpy()
        for j, col in enumerate(self.context.categorical):
            data[col.name] = np.array(col.categories or [], dtype=object)[cat[:, j]]
        for j, (col, values) in enumerate(zip(self.context.numeric, self.numeric_values(ctx).T)):
            data[col.name] = values
        return pd.DataFrame(data)


def _keys(cat: Tensor, num: Tensor) -> list[bytes]:
    """One bytes key per context row: its category codes and its standardised float32 values."""
    c = np.ascontiguousarray(cat.numpy().astype(np.int64))
    n = np.ascontiguousarray(num.numpy().astype(np.float32)).view(np.int32).astype(np.int64)
    both = np.ascontiguousarray(np.concatenate([c, n], axis=1))
    return [row.tobytes() for row in both]


class FrameObjective(_Bound):
    """A black-box score: fn(frame) -> one number per row, frame a pandas DataFrame of labelled rows
    (the feature columns in the space's labels, then the context columns: categories as labels,
    numbers as given). Not differentiable: trained by score-function estimators (reinforce,
    trajectory-balance), searched by every decoder. scale: the score's typical spread (None:
    estimated from random rows when fitting)."""

    differentiable = False

    def __init__(self, fn: Callable[[pd.DataFrame], object], scale: Optional[float] = None, name: Optional[str] = None):
        if not callable(fn):
            raise InputError(name or "objective", [f"expected a function f(frame) -> scores, got {type(fn).__name__}"])
        super().__init__(name or getattr(fn, "__name__", "objective"), scale)
        self.fn = fn

    def score(self, x: Tensor, ctx: TableContext) -> Tensor:
        self._need_bound()
        rows = self.hard(x)
        frame = self.frame(rows, ctx)
        try:
            values = self.fn(frame)
        except Exception as exc:      # the user's code: any error is theirs to see, named, not a traceback of ours
            raise InputError(self.name, [f"raised {type(exc).__name__}: {exc}"]) from None
        return self.check(values, len(rows), x, ctx).to(x.device)


class ModuleObjective(_Bound):
    """A differentiable score: module(features, context) -> (N,) tensor. features: {name: (N, V_f)
    one-hot or soft rows in the space's label order}; context: {name: (N, C) one-hot over a
    categorical column's categories (sorted), or (N,) float values of a numeric one}. Gradients reach
    the soft rows, so every estimator works. scale: as FrameObjective."""

    def __init__(self, module: torch.nn.Module, scale: Optional[float] = None, name: Optional[str] = None):
        if not isinstance(module, torch.nn.Module):
            raise InputError(name or "objective", [f"expected a torch.nn.Module instance whose forward(features, "
                                                   f"context) returns (N,) scores, got {type(module).__name__}"])
        super().__init__(name or type(module).__name__, scale)
        self.module = module

    def prepare(self, device: torch.device | str) -> ModuleObjective:
        self.module.to(device).eval().requires_grad_(False)
        return self

    def score(self, x: Tensor, ctx: TableContext) -> Tensor:
        self._need_bound()
        n = x.shape[0]
        if x.is_floating_point():
            features = {slot.name: x[:, s, : len(slot.categories)] for s, slot in enumerate(self.space.slots)}
        else:
            features = {slot.name: torch.nn.functional.one_hot(x[:, s], len(slot.categories)).float()
                        for s, slot in enumerate(self.space.slots)}
        context = {col.name: torch.nn.functional.one_hot(ctx.cat[:, j], len(col.categories or [])).float()
                   for j, col in enumerate(self.context.categorical)}
        values = torch.as_tensor(self.numeric_values(ctx), dtype=torch.float32, device=x.device)
        context.update({col.name: values[:, j] for j, col in enumerate(self.context.numeric)})
        try:
            out = self.module(features, context)
        except Exception as exc:
            raise InputError(self.name, [f"raised {type(exc).__name__}: {exc} (called as forward(features, context): "
                                         "features {name: (N, V) one-hot rows}, context {name: (N, C) one-hot or "
                                         "(N,) values})"]) from None
        if not isinstance(out, Tensor):
            raise InputError(self.name, [f"returned {type(out).__name__}; expected a (N,) tensor of scores"])
        return self.check(out, n, x, ctx)


def estimate_scale(objective: Objective, space: ChoiceSpace, contexts: TableContext, seed: int = 0) -> float:
    """The score's spread under uniform random rows: the mean over SCALE_CONTEXTS contexts of the std
    of SCALE_ROWS rows each (1.0 when they do not vary)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(contexts), generator=g)[:SCALE_CONTEXTS]
    ctx = contexts.index(pick.to(contexts.device))
    B = len(ctx)
    sizes = torch.tensor(space.sizes)
    rows = (torch.rand(B, SCALE_ROWS, len(sizes), generator=g) * sizes).long().to(contexts.device)
    with torch.no_grad():
        scores = objective(rows.reshape(B * SCALE_ROWS, -1), ctx.repeat_interleave(SCALE_ROWS))
    spread = float(scores.detach().double().reshape(B, SCALE_ROWS).std(1).mean())
    return spread if math.isfinite(spread) and spread > 0 else 1.0


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_objective(spec: str, name: str = "--objective", scale: Optional[float] = None) -> tuple[_Bound, dict]:
    """'FILE.py:NAME' -> (the objective NAME names in FILE: a FrameObjective for a function, a
    ModuleObjective for a torch module instance; its record {file, name, sha256, kind}). The file is
    imported here, on the user's request only. InputError naming the flag for a missing file, a
    missing name (with "did you mean"), or an error while importing it."""
    file, sep, attr = str(spec).rpartition(":")
    if not sep or not file or not attr:
        raise InputError(name, [f'expected FILE.py:NAME (a Python file and the function or module in it), got "{spec}"'])
    path = Path(file)
    if not path.is_file():
        raise InputError(name, [f"{file}: file not found" if not path.exists() else f"{file}: not a regular file"])
    if path.suffix != ".py":
        raise InputError(name, [f'{file}: expected a Python file (.py), got "{path.suffix}"'])
    module_name = f"choicegrad_objective_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec_ = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec_)
    # registered as a module, as an import would: dataclasses, typing and pickle (a process pool in the
    # user's simulator) look their module up in sys.modules
    sys.modules[module_name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)       # its own imports beside it, as `python FILE.py` has
    try:
        spec_.loader.exec_module(module)
    except (Exception, SystemExit) as exc:     # a top-level sys.exit() too: the CLI would end without a word
        sys.modules.pop(module_name, None)
        what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else f"raised {type(exc).__name__}: {exc}"
        raise InputError(name, [f"{file}: importing it {what}"]) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    if not hasattr(module, attr):
        names = [n for n in vars(module) if not n.startswith("_")]
        raise InputError(name, [f'{file} has no "{attr}"{did_you_mean(attr, names)}; it defines: '
                                f"{', '.join(names[:12])}"])
    value = getattr(module, attr)
    label = f"{path.name}:{attr}"
    if isinstance(value, torch.nn.Module):
        objective: _Bound = ModuleObjective(value, scale, label)
    elif callable(value) and not isinstance(value, type):
        objective = FrameObjective(value, scale, label)
    else:
        raise InputError(name, [f'{label} is a {type(value).__name__}; expected a function f(frame) -> scores or a '
                                "torch.nn.Module instance (not a class: create it in the file, e.g. net = Net())"])
    record = {"file": path.name, "name": attr, "sha256": file_sha256(path),
              "kind": "module" if isinstance(objective, ModuleObjective) else "frame"}
    return objective, record
