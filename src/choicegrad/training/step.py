"""One training step: a batch of contexts, the generator bound to them as a policy, the estimator's loss.

Every generator form trains through the same call, `estimator(policy_of(gen, ctx), score_fn, ...)`:
the estimator decides what to draw (rows, relaxed rows, data rows' likelihood) and the policy how
(independent slots, or slot by slot). This module only chooses the batch and feeds the estimator
what its class declares it needs (choicegrad.estimators.contract.Estimator): data rows as targets
(`wants_data_rows`), an aligner's reference rows (`needs_aligner`), the relaxation temperature
(`uses_tau`), and the per-call options of the trainable modules it adds (`modules`: trajectory
balance's learned log Z), which the loop optimises and checkpoints. It never branches on a name.

Data-parallel training (torchrun): every rank draws the global batch from the shared generator, as
one process does, and keeps its share of the contexts and of what comes with them; the estimator
gets a BatchShard of the generator (choicegrad.estimators.shard), so each context's draws are one
process's. The loss is this rank's mean times its share of the batch: the ranks' gradients summed
are one process's.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from choicegrad import distributed, estimators
from choicegrad.decoding.local_search import generator_ratings
from choicegrad.estimators.shard import BatchShard
from choicegrad.generators.base import Generator
from choicegrad.generators.context import Context, TableContext
from choicegrad.errors import InputError
from choicegrad.generators.objective import as_objective, score_rows
from choicegrad.generators.policy import policy_of
from choicegrad.training.distill import Distillation

#: Amortised search's default weight (GeneratorFit.distill = None): measured on ehrlich, the generator
#: alone at 16 calls went from 0.855 to 0.999 of the scorer's gap (docs/targets.md).
DISTILL = 1.0


def distill_weight(distill, method: str, contexts: Optional[int] = None) -> float:
    """The amortised-search weight a fit uses: `distill`, or by default the estimator's own default
    (Estimator.default_distill: 0 for trajectory balance, whose target is to sample in proportion to
    exp(score / T), not to climb to the best rows), else DISTILL; but 0 for a single training context
    (contexts == 1: search at generation time is then paid once, so there is nothing to amortise, and
    learning that context's one best row collapses the draws that many distinct candidates start
    from: gb1's max of 128 fell from 0.933 to 0.633, benchmarks/distill_ablation.py). contexts:
    training contexts, None for a stream of fresh ones."""
    if distill is not None:
        return float(distill)
    own = estimators.get_class(method).default_distill
    if own is not None:
        return float(own)
    return 0.0 if contexts == 1 else DISTILL


def needs_gradient(method: str) -> bool:
    """Whether estimator `method` differentiates the score (pathwise, learned) rather than only reading
    its values (score-function, reward-proportional, supervised)."""
    return estimators.get_class(method).family in ("pathwise", "learned")


def check_trainable(objective, method: str) -> None:
    """InputError('method') when `method` needs gradients of a non-differentiable objective."""
    if objective is not None and not objective.differentiable and needs_gradient(method):
        value_only = [m for m in estimators.available() if not needs_gradient(m)]
        raise InputError("method", [f'"{method}" passes gradients through the score, but this objective is not '
                                    f"differentiable (a black box): train it with one of {', '.join(value_only)} "
                                    "(they read score values only), or give a torch module (ModuleObjective)"])


class TrainingStep:
    """The loss of one step for (generator, estimator) on contexts drawn from `contexts`.

    fit: a GeneratorFit (method, method_options validated into the estimator's typed options,
    batch_size, samples); objective(x, ctx) -> (N,) is divided by its `scale` so that scores (and the
    entropy bonus) are in score standard deviations. aligner: the Aligner an estimator that
    `needs_aligner` pulls through (its references come from the table). `modules`: the trainable
    modules the estimator adds (an nn.ModuleDict by checkpoint key, empty for most).
    """

    def __init__(self, gen: Generator, objective, contexts, fit, aligner=None):
        self.objective = as_objective(objective) if objective is not None else None
        self.gen, self.contexts, self.fit = gen, contexts, fit
        self.world = distributed.current()
        cls = estimators.get_class(fit.method)
        self.method = cls.name
        self.scale = (self.objective.scale if self.objective is not None else 1.0) or 1.0
        check_trainable(self.objective, self.method)
        self.estimator, self.step_options = cls.for_fit(fit)
        self.modules = nn.ModuleDict(self.estimator.modules(gen))
        self.has_data = hasattr(contexts, "data_rows")
        self.distill, self.ids = None, None
        ids = len(contexts) if hasattr(contexts, "sample_ids") else None
        weight = distill_weight(fit.distill, self.method, ids)
        if weight > 0:
            self.distill = Distillation(weight, fit.distill_sweeps, ids, gen.num_slots, gen.device)
        self.aligner = aligner
        if self.estimator.needs_aligner and (aligner is None or not hasattr(contexts, "references")):
            raise ValueError(f"the {self.method} method needs an Aligner (fit_generator(..., aligner=...)) and a "
                             "table of data rows for its reference rows")

    @property
    def uses_tau(self) -> bool:
        return self.estimator.uses_tau

    def score(self, x: Tensor, ctx: Context) -> Tensor:
        """Objective in scale units: x (N, S) long or (N, S, V) float, ctx of N -> (N,)."""
        return self.objective(x, ctx) / self.scale

    def __call__(self, tau: float, entropy_coef: float, rng: torch.Generator) -> tuple[Tensor, dict]:
        """(loss with the entropy bonus, stats with score_mean/score_max/entropy/scorer_calls).

        Data-parallel: the loss is this rank's part of the global batch's (the ranks' losses add up
        to it), scorer_calls this rank's; the other stats are the global batch's."""
        shard = BatchShard.of(rng, self.fit.batch_size, self.world) if self.world.distributed else None
        ctx, extra, pre_calls = self.batch(rng, shard)
        B = len(ctx)

        def score_fn(x: Tensor) -> Tensor:
            return self.score(x, ctx.repeat_interleave(x.shape[0] // B))

        if self.estimator.uses_tau:
            extra["tau"] = tau
        extra.update(self.estimator.module_options(dict(self.modules), ctx))
        if not self.estimator.entropy_bonus:
            entropy_coef = 0.0
        policy = policy_of(self.gen, ctx)
        out = self.estimator(policy, score_fn, generator=rng if shard is None else shard, **extra)
        self.estimator.after_step(dict(self.modules), out, (lambda t: t) if shard is None else shard.whole)
        loss = out.loss
        if self.distill is not None:       # amortised search: raise the likelihood of what search found
            logits = getattr(policy, "theta", None)
            if logits is None:
                with torch.no_grad():     # autoregressive: its wide slots' logits with nothing chosen (None if none)
                    logits = generator_ratings(self.gen, ctx, policy.mask)
            targets, calls = self.distill.targets(self.score, ctx, policy.mask, out.samples, out.scores, self.ids,
                                                  shard, logits=logits)
            loss = loss + self.distill.loss(self.gen, targets, ctx)
            pre_calls += calls
        H = out.entropy.mean()
        if shard is not None:    # every term is a mean over this rank's contexts
            both = shard.whole(torch.cat([out.scores.float(), out.entropy.detach().float()[:, None]], 1))
            scores, entropy = both[:, :-1], float(both[:, -1].mean())
            return (loss - entropy_coef * H) * (B / shard.size), {
                "score_mean": float(scores.mean()) * self.scale, "score_max": float(scores.max()) * self.scale,
                "entropy": entropy, "scorer_calls": out.scorer_calls + pre_calls}
        scores = out.scores.float()
        return loss - entropy_coef * H, {
            "score_mean": float(scores.mean()) * self.scale, "score_max": float(scores.max()) * self.scale,
            "entropy": float(H.detach()), "scorer_calls": out.scorer_calls + pre_calls}

    def batch(self, rng: torch.Generator, shard: Optional[BatchShard] = None) -> tuple[Context, dict[str, Any], int]:
        """(contexts, the estimator's per-call options, scorer calls spent choosing them).

        shard: this rank's share (data parallelism): the global batch is drawn from `rng` as in one
        process, and the share of it returned."""
        n = self.fit.batch_size

        def mine(x):
            if shard is None:
                return x
            return x[shard.slice] if isinstance(x, Tensor) else x.index(shard.slice)

        if self.estimator.needs_aligner:
            ids = self.contexts.sample_ids(n, rng)
            ctx = self.contexts.contexts.index(ids)
            extra, calls = self.aligner_options(ids, ctx, rng, shard)
            return mine(ctx), extra, calls
        if not self.estimator.wants_data_rows:
            if self.distill is not None and self.distill.rows is not None:   # ids for the replay
                ids = self.contexts.sample_ids(n, rng)
                self.ids = mine(ids)
                return mine(self.contexts.contexts.index(ids)), {}, 0
            return mine(self.contexts.sample(n, rng)), {}, 0
        if self.has_data:
            targets, ctx = self.contexts.data_rows(n, rng)
            return mine(ctx), {"targets": mine(targets)}, 0
        if "target_scores" not in self.estimator.call_options:   # it proposes its own candidates (raml)
            return mine(self.contexts.sample(n, rng)), {}, 0
        # no data rows: imitate the best of `samples` own rows per context (cross-entropy method)
        ctx = mine(self.contexts.sample(n, rng))
        own = self.gen.sample(ctx, self.fit.samples, generator=rng if shard is None else shard)
        with torch.no_grad():
            f, calls = score_rows(self.score, own, ctx)
        best = f.argmax(1)
        ar = torch.arange(len(ctx), device=own.device)
        extra = {"targets": own[ar, best]}
        if "target_scores" in self.estimator.call_options:
            extra["target_scores"] = f[ar, best]
        return ctx, extra, calls

    def aligner_options(self, ids: Tensor, ctx: TableContext, rng: torch.Generator,
                        shard: Optional[BatchShard] = None) -> tuple[dict[str, Any], int]:
        """The aligner's call options for contexts `ids`: embed (bound to ctx), the embedded good and
        bad reference rows of each context; and the rows embedded (counted as scorer calls). shard:
        the references are drawn for the global batch and this rank's share of them embedded (and
        embed bound to the share's contexts)."""
        refs = self.step_options
        good, bad = self.contexts.references(ids, refs.references, refs.reference_share, rng)   # (B, n, S)
        if shard is not None:
            good, bad, ctx = good[shard.slice], bad[shard.slice], ctx.index(shard.slice)
        B, n, S = good.shape
        rep = ctx.repeat_interleave(2 * n)
        with torch.no_grad():
            z = self.aligner.embed(torch.cat([good, bad], 1).reshape(B * 2 * n, S), rep.cat, rep.num)
        z = z.reshape(B, 2 * n, -1)
        aligner = self.aligner

        def embed(x: Tensor) -> Tensor:
            return aligner.embed(x, ctx.cat, ctx.num)

        return {"embed": embed, "positives": z[:, :n], "negatives": z[:, n:]}, B * 2 * n


def entropy_at(fit, step: int) -> float:
    """The entropy bonus coefficient at step (1-based): constant, or linear to fit.entropy_end."""
    if fit.entropy_end is None:
        return fit.entropy
    frac = (step - 1) / max(1, fit.steps - 1)
    return fit.entropy + (fit.entropy_end - fit.entropy) * frac

