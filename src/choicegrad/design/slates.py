"""Ask/tell design rounds over slates (item lists): measure what was proposed, tell it, ask again.

    designer = SlateDesigner(ItemSpec(slots="left,right", items="items.csv", context="user", score="y",
                                      lists="lists.csv"), workdir="rounds")
    designer.tell(first_slates)                 # context columns, slot columns of item ids, the score
    batch = designer.ask(8, items="today.csv", lists="today_lists.csv")
    ... measure batch ..., designer.tell(batch_with_scores)

Each ask fits an item run (choicegrad.items) on every slate told so far, in WORKDIR/round-N, with a
scorer ensemble (its spread is the `uncertainty` column), then proposes the n best slates per list
that were never told for that list. A slate whose measurement failed (score NaN, -inf or empty) is
kept out of the scorer's fit and never proposed again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import pandas as pd
import torch

from choicegrad.errors import InputError
from choicegrad.io import read_table
from choicegrad.items import ItemSpec

Table = Union[str, Path, pd.DataFrame]


class SlateDesigner:
    """Design rounds over slates. spec: the item problem (slots, items, context, score, lists, list
    id, distinct, eligibility; its log is what tell() gathers); workdir: where each round's run is
    written; ensemble: scorer members (uncertainty); generator_fit / scorer_fit: as Run.fit takes
    them; seed: the first round's seed (round r uses seed + r)."""

    def __init__(self, spec: ItemSpec, workdir: Union[str, Path], *, ensemble: int = 4, generator_fit=None,
                 scorer_fit=None, seed: int = 0):
        if not spec.score:
            raise InputError("spec", ["score: name the column the measured slates' scores are told in"])
        self.spec, self.workdir, self.ensemble, self.seed = spec, Path(workdir), int(ensemble), int(seed)
        self.generator_fit, self.scorer_fit = generator_fit, scorer_fit
        self.measured: Optional[pd.DataFrame] = None
        self.run = None
        self.rounds = 0

    @property
    def keys(self) -> list[str]:
        return self.spec.context_names + ([self.spec.list_id] if self.spec.list_id else [])

    def tell(self, slates: Table, scores=None) -> None:
        """Add measured slates (context columns, slot columns of item ids, and the score column unless
        `scores` is given: (N,) numbers, NaN / -inf / None for a failed measurement)."""
        frame = (read_table(slates) if isinstance(slates, (str, Path)) else slates).reset_index(drop=True).copy()
        if scores is not None:
            values = list(scores)
            if len(values) != len(frame):
                raise InputError("scores", [f"{len(values)} scores for {len(frame)} slates"])
            frame[self.spec.score] = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        missing = [c for c in [*self.spec.slot_names, self.spec.score, *self.spec.context_names] if c not in frame.columns]
        if missing:
            raise InputError(str(slates) if isinstance(slates, (str, Path)) else "slates",
                             [f'no column "{c}" (slates need the context columns, the slot columns and the score)'
                              for c in missing])
        keep = [*self.keys, *self.spec.slot_names, self.spec.score]
        frame = frame[[c for c in dict.fromkeys(keep) if c in frame.columns]]
        self.measured = frame if self.measured is None else pd.concat([self.measured, frame], ignore_index=True)

    def ask(self, n: int, *, items: Optional[Table] = None, lists: Optional[Table] = None,
            contexts: Optional[Table] = None, echo: Callable[[str], None] = lambda line: None,
            progress: Optional[bool] = False) -> pd.DataFrame:
        """n new slates per list, never told for that list, best first: the key columns, the slots,
        `predicted` (ensemble mean), `uncertainty` (ensemble std) and `rank`. items / lists /
        contexts: as Run.generate takes them (default: the spec's lists and items)."""
        from choicegrad.run import Run
        from choicegrad.scorer.fit import ScorerFit
        from choicegrad.training.loop import GeneratorFit

        if not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError("n", [f"expected a batch size >= 1, got {n!r}"])
        if self.measured is None:
            raise InputError("ask", ["nothing measured yet: tell(slates) first"])
        score = self.spec.score
        ok = np.isfinite(pd.to_numeric(self.measured[score], errors="coerce").to_numpy(dtype=float))
        if ok.sum() < 10:
            raise InputError("ask", [f"{int(ok.sum())} measured slates have a score; at least 10 are needed"])
        log = self.measured[ok].reset_index(drop=True)
        seed = self.seed + self.rounds
        scorer_fit = (self.scorer_fit or ScorerFit()).model_copy(update={"ensemble": self.ensemble, "seed": seed})
        generator_fit = (self.generator_fit or GeneratorFit()).model_copy(update={"seed": seed})
        out = self.workdir / f"round-{self.rounds}"
        self.run = Run.fit(log, out, self.spec, scorer_fit=scorer_fit, generator_fit=generator_fit, overwrite=True,
                           echo=echo, progress=progress)
        told = self.measured.copy()
        extra = int(told.groupby(self.keys).size().max()) if self.keys else len(told)
        cands = self.run.generate(items=items, lists=lists, contexts=contexts, k=n + extra, seed=seed)
        slots = self.spec.slot_names
        key = self.keys + slots
        seen = cands[key].astype(str).merge(told[key].astype(str).drop_duplicates(), how="left", indicator=True)
        fresh = cands[(seen["_merge"] == "left_only").to_numpy()].copy()
        fresh["rank"] = fresh.groupby(self.keys, sort=False).cumcount() + 1 if self.keys else np.arange(1, len(fresh) + 1)
        fresh = fresh[fresh["rank"] <= n].reset_index(drop=True)
        fresh.insert(len(fresh.columns) - 1, "uncertainty", self._spread(fresh, items))
        self.rounds += 1
        return fresh

    def _spread(self, slates: pd.DataFrame, items: Optional[Table]) -> np.ndarray:
        """(N,) the scorer members' std for each slate, in the score's units."""
        from choicegrad.items import read_slates

        run = self.run
        _, _, lg, catalogue = read_slates(run, slates, items)
        with torch.no_grad():
            members = run.scorer.member_scores(catalogue.vectors[lg.slots].to(run.device), lg.cat.to(run.device),
                                               lg.num.to(run.device))
        return (members.std(0, unbiased=False).double().cpu().numpy() * float(run.scorer.unit)
                if members.shape[0] > 1 else np.zeros(len(slates)))
