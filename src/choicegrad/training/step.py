"""One training step: a batch of contexts, the generator bound to them as a policy, the estimator's loss.

Every generator form trains through the same call, `estimator(policy_of(gen, ctx), score_fn, ...)`:
the estimator decides what to draw (rows, relaxed rows, data rows' likelihood) and the policy how
(independent slots, or slot by slot). This module only chooses the batch and what the estimator is
fed: data rows as targets for estimators that want them (weighted-ce; raml with data=True), the
aligner's reference rows, the relaxation temperature, and trajectory balance's learned log Z (a `LogZ`
module of the context that the step owns and the loop optimises and checkpoints).

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
from choicegrad.estimators.base import normalize_name, unknown_name_error
from choicegrad.estimators.shard import BatchShard
from choicegrad.generators.base import Generator
from choicegrad.generators.context import Context, ItemContext, TableContext
from choicegrad.errors import InputError
from choicegrad.generators.objective import as_objective, score_rows
from choicegrad.generators.policy import policy_of
from choicegrad.training.distill import Distillation

#: Options of the training step that are not estimator hyperparameters (aligner reference rows).
STEP_OPTIONS = {"aligner": ("references", "reference_share")}

#: Trajectory balance's default temperature in training, in scorer standard deviations: the generator
#: samples rows with probability proportional to exp(score / (0.25 std)), so a row 1 std better is
#: e^4 ~ 55 times likelier: concentrated on the good rows, yet holding many distinct ones (measured in
#: benchmarks/trajectory_balance.py, docs/gradients.md). Override with method_options={"temperature": T}.
TB_TEMPERATURE = 0.25


#: Amortised search's default weight (GeneratorFit.distill = None): measured on ehrlich, the generator
#: alone at 16 calls went from 0.855 to 0.999 of the scorer's gap (docs/targets.md).
DISTILL = 1.0


def distill_weight(distill, method: str, contexts: Optional[int] = None) -> float:
    """The amortised-search weight a fit uses: `distill`, or by default DISTILL, but 0 for trajectory
    balance (its target is to sample in proportion to exp(score / T), not to climb to the best rows)
    and 0 for a single training context (contexts == 1: search at generation time is then paid once,
    so there is nothing to amortise, and learning that context's one best row collapses the draws that
    many distinct candidates start from: gb1's max of 128 fell from 0.933 to 0.633,
    benchmarks/distill_ablation.py). contexts: training contexts, None for a stream of fresh ones."""
    if distill is not None:
        return float(distill)
    if normalize_name(method) == "trajectory-balance" or contexts == 1:
        return 0.0
    return DISTILL


class LogZ(nn.Module):
    """Trajectory balance's learned log Z of a context: a scalar per context, linear in the context.

    TableContext: per categorical column a 1-dimensional embedding (summed), a linear layer on the
    numeric columns, and a bias; ItemContext: a linear layer on the masked mean of the item vectors
    plus a bias; a context-free table: the bias alone. `ready` (a buffer, so it is checkpointed) says
    whether the bias has been set from a first batch estimate (see `initialise`).
    """

    def __init__(self, cardinalities: list[int] = (), num_numeric: int = 0, item_dim: int = 0):
        super().__init__()
        self.embeds = nn.ModuleList(nn.Embedding(int(c), 1) for c in cardinalities)
        for e in self.embeds:
            nn.init.zeros_(e.weight)
        self.numeric = nn.Linear(int(num_numeric), 1, bias=False) if num_numeric else None
        self.items = nn.Linear(int(item_dim), 1, bias=False) if item_dim else None
        for lin in (self.numeric, self.items):
            if lin is not None:
                nn.init.zeros_(lin.weight)
        self.bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    @classmethod
    def for_generator(cls, gen: Generator) -> "LogZ":
        """The LogZ for the contexts `gen` conditions on (table columns, or item vectors)."""
        if hasattr(gen, "item_dim"):
            return cls(item_dim=gen.item_dim)
        return cls(getattr(gen, "cardinalities", []), getattr(gen, "num_numeric", 0))

    def forward(self, ctx: Context) -> Tensor:
        B = len(ctx)
        out = self.bias.expand(B)
        if isinstance(ctx, ItemContext):
            if self.items is not None:
                m = ctx.mask.to(ctx.items.dtype).unsqueeze(-1)
                mean = (ctx.items * m).sum(1) / m.sum(1).clamp_min(1.0)
                out = out + self.items(mean.to(self.bias.dtype))[:, 0]
            return out
        for j, e in enumerate(self.embeds):
            out = out + e(ctx.cat[:, j])[:, 0]
        if self.numeric is not None and ctx.num.shape[-1]:
            out = out + self.numeric(ctx.num.to(self.bias.dtype))[:, 0]
        return out

    @torch.no_grad()
    def initialise(self, shift: float) -> None:
        """Once, move the bias by `shift` (the batch estimate of log Z minus the current prediction) so
        that log Z starts near its value for the untrained policy instead of 0."""
        if not bool(self.ready):
            self.bias.add_(shift)
            self.ready.fill_(True)


def needs_gradient(method: str) -> bool:
    """Whether estimator `method` differentiates the score (pathwise, learned) rather than only reading
    its values (score-function, reward-proportional, supervised)."""
    return estimators.get_class(method).family in ("pathwise", "learned")


def check_trainable(objective, method: str) -> None:
    """InputError('method') when `method` needs gradients of a non-differentiable objective."""
    if objective is not None and not objective.differentiable and needs_gradient(method):
        raise InputError("method", [f'"{method}" passes gradients through the score, but this objective is not '
                                    "differentiable (a black box): train it with reinforce or trajectory-balance, or "
                                    "give a torch module (ModuleObjective)"])


class TrainingStep:
    """The loss of one step for (generator, estimator) on contexts drawn from `contexts`.

    fit: a GeneratorFit (method, method_options, batch_size, samples); objective(x, ctx) -> (N,) is
    divided by its `scale` so that scores (and the entropy bonus) are in score standard deviations.
    aligner: the Aligner the `aligner` method pulls through (its references come from the table).
    """

    def __init__(self, gen: Generator, objective, contexts, fit, aligner=None):
        self.objective = as_objective(objective) if objective is not None else None
        self.gen, self.contexts, self.fit = gen, contexts, fit
        self.world = distributed.current()
        self.method = normalize_name(fit.method)
        if self.method not in estimators.available():
            raise unknown_name_error(fit.method, estimators.available())
        self.scale = (self.objective.scale if self.objective is not None else 1.0) or 1.0
        check_trainable(self.objective, self.method)
        opts = dict(fit.method_options)
        step_opts = {k: opts.pop(k) for k in STEP_OPTIONS.get(self.method, ()) if k in opts}
        if self.method == "reinforce":
            opts.setdefault("k", fit.samples)
            opts.pop("entropy", None)  # the loop's entropy bonus applies to every method
        if self.method == "raml":
            opts.setdefault("m", fit.samples)
        self.log_z = None
        if self.method == "trajectory-balance":
            opts.setdefault("k", fit.samples)
            opts.setdefault("temperature", TB_TEMPERATURE)
            self.log_z = LogZ.for_generator(gen).to(gen.device)
        self.estimator = estimators.get(self.method, **opts)
        self.has_data = hasattr(contexts, "data_rows")
        self.distill, self.ids = None, None
        ids = len(contexts) if hasattr(contexts, "sample_ids") else None
        weight = distill_weight(fit.distill, self.method, ids)
        if weight > 0:
            self.distill = Distillation(weight, fit.distill_sweeps, ids, gen.num_slots, gen.device)
        if self.method == "aligner":
            if aligner is None or not hasattr(contexts, "references"):
                raise ValueError("the aligner method needs an Aligner (fit_generator(..., aligner=...)) and a table "
                                 "of data rows for its reference rows")
            self.aligner = aligner
            self.references = int(step_opts.get("references", 8))
            self.reference_share = float(step_opts.get("reference_share", 0.2))

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
        if self.log_z is not None:
            # Trajectory balance: the learned log Z of each context. Its target already is the
            # maximiser of E[f]/T + entropy, so the loop's entropy bonus is not added (a bonus c would
            # only raise the temperature to T (1 + c/2)).
            extra["log_z"] = self.log_z(ctx)
            entropy_coef = 0.0
        policy = policy_of(self.gen, ctx)
        out = self.estimator(policy, score_fn, generator=rng if shard is None else shard, **extra)
        if self.log_z is not None and not bool(self.log_z.ready):
            # first step: start log Z at the batch estimate mean(f/T - log p) (residuals are log_z - that)
            self.log_z.initialise(-float((out.weights if shard is None else shard.whole(out.weights)).mean()))
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

        if self.method == "aligner":
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
        if "target_scores" not in self.estimator.call_options:   # raml: propose its own candidates
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
        good, bad = self.contexts.references(ids, self.references, self.reference_share, rng)   # (B, n, S)
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

