"""Trajectory balance (Malkin et al. 2022, "Trajectory balance: improved credit assignment in
GFlowNets"): a reward-proportional objective. Instead of maximising E[score], the policy is fitted to
the distribution pi(x) = exp(f(x) / T) / Z of each context, so it keeps every good row in proportion to
exp(score / T) rather than collapsing onto the best one.

A row is built slot by slot and each partial row has one parent, so a trajectory is the row itself and
the backward policy is trivial: the trajectory-balance residual of a row is
    delta(x) = log Z + log p(x) - f(x) / T,
and the loss is mean over samples of delta^2 with on-policy samples (sampling is not differentiated).
Its expected gradient w.r.t. the policy, 2 E[delta * grad log p], equals 2 grad KL(p || pi) for any
log Z (E[grad log p] = 0): log Z acts as a baseline. The scorer is called under torch.no_grad() with
one-hot rows, once per call, like reinforce (so black-box scores work).

In training (choicegrad.training) the estimator brings its own learned log Z of the context (`LogZ`,
through the `modules` hook), trained with the generator at LOG_Z_LR_FACTOR times its learning rate and
checkpointed with it; it asks for no entropy bonus and no amortised search (see the class).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from choicegrad.estimators.base import ScoreFn, call_scorer, check_int, check_tau, hard_rows, score_stats
from choicegrad.estimators.contract import Estimator, EstimatorOutput, register

#: Default temperature in training, in scorer standard deviations: the generator samples rows with
#: probability proportional to exp(score / (0.25 std)), so a row 1 std better is e^4 ~ 55 times
#: likelier: concentrated on the good rows, yet holding many distinct ones (measured in
#: benchmarks/trajectory_balance.py, docs/gradients.md). Override with method_options={"temperature": T}.
TB_TEMPERATURE = 0.25

#: Learning rate of the learned log Z relative to the generator's: 0.1 at the default lr, the
#: trajectory-balance paper's log Z rate. Log Z must keep up with the policy: at 10x, on-policy TB
#: collapsed onto the best row at T = 0.25 std (benchmarks/trajectory_balance.py, docs/gradients.md).
LOG_Z_LR_FACTOR = 50.0


class LogZ(nn.Module):
    """The learned log Z of a context: a scalar per context, linear in the context.

    Table contexts: per categorical column a 1-dimensional embedding (summed), a linear layer on the
    numeric columns, and a bias; item contexts: a linear layer on the masked mean of the item vectors
    plus a bias; a context-free table: the bias alone. `ready` (a buffer, so it is checkpointed) says
    whether the bias has been set from a first batch estimate (see `initialise`). Every weight starts
    at zero (no draw from any random generator).
    """

    def __init__(self, cardinalities: list[int] = (), num_numeric: int = 0, item_dim: int = 0):
        super().__init__()
        self.embeds = nn.ModuleList(nn.Embedding(int(c), 1, _weight=torch.zeros(int(c), 1)) for c in cardinalities)
        self.numeric = self._zero_linear(num_numeric)
        self.items = self._zero_linear(item_dim)
        self.bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def _zero_linear(n: int) -> Optional[nn.Linear]:
        if not n:
            return None
        lin = nn.utils.skip_init(nn.Linear, int(n), 1, bias=False)
        nn.init.zeros_(lin.weight)
        return lin

    @classmethod
    def for_generator(cls, gen) -> "LogZ":
        """The LogZ for the contexts `gen` conditions on (table columns, or item vectors)."""
        if hasattr(gen, "item_dim"):
            return cls(item_dim=gen.item_dim)
        return cls(getattr(gen, "cardinalities", []), getattr(gen, "num_numeric", 0))

    def forward(self, ctx) -> Tensor:
        """(B,) log Z of a TableContext or ItemContext of B contexts."""
        B = len(ctx)
        out = self.bias.expand(B)
        if hasattr(ctx, "items"):            # ItemContext: items (B, N, D), mask (B, N)
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


@register("trajectory-balance")
class TrajectoryBalance(Estimator):
    """Trajectory balance with K on-policy samples per context; target exp(f / T) / Z per context.

    k: samples per context (>= 1; >= 2 when no `log_z` is passed). temperature: T > 0, in the units
    score_fn returns (a training loop's scores are in scorer standard deviations, see
    choicegrad.training.step). Per-call option `log_z`: (B,) (or a scalar) differentiable log Z of
    each context, e.g. a learned function of the context; the loss is then
        mean_{b,k} (log_z_b + log p(x_bk) - f(x_bk) / T)^2
    and its gradient reaches both the policy and log_z (whose optimum is log sum_x exp(f(x)/T) once
    the policy matches). Without `log_z` (the "VarGrad" / log-variance variant, Richter et al. 2020;
    Zhang et al. 2023) each context's log Z is the batch estimate mean_k(f/T - log p), detached; the
    loss is then the unbiased sample variance over the K samples of log p - f/T,
        K / (K - 1) * mean_{b,k} (log p(x_bk) - f(x_bk)/T - mean_k(...))^2,
    whose policy gradient is, in expectation, exactly trajectory balance's (at any log Z, in
    particular the optimal one): the K / (K - 1) factor turns the batch mean into a leave-one-out one.

    Not an estimate of grad -E[score]: `loss` is the trajectory-balance loss, minimised when the
    policy samples exp(f/T)/Z. Smaller T concentrates the target on the best rows (T -> 0: the
    argmax), larger T spreads it. Output: `sample` = best-scoring of the K samples (first on ties),
    `weights` = the detached residuals delta (B, K) (positive = the row is sampled more often than
    exp(f/T)/Z asks, so its log-likelihood is pushed down: the opposite sign of reinforce's
    advantages), `entropy` = policy.entropy(samples), stats add `log_z` (mean over contexts) and
    `residual_std`.

    In training: k defaults to GeneratorFit.samples and temperature to TB_TEMPERATURE; the learned
    log Z is a `LogZ` of the context (started at the first batch's estimate); the loop's entropy
    bonus is not added (the target already is the maximiser of E[f]/T + entropy: a bonus c would only
    raise the temperature to T (1 + c/2)), nor amortised search by default (its target is
    exp(score/T), not the search's best rows).
    """

    family = "reward-proportional"
    call_options = ("log_z",)
    fit_defaults = {"k": "samples"}
    training_defaults = {"temperature": TB_TEMPERATURE}
    default_distill = 0.0
    entropy_bonus = False
    module_lr = LOG_Z_LR_FACTOR

    def __init__(self, *, k: int = 16, temperature: float = 1.0):
        self.k = check_int(k, "k")
        self.temperature = check_tau(temperature, "temperature")

    def modules(self, gen) -> dict[str, nn.Module]:
        return {"log_z": LogZ.for_generator(gen).to(gen.device)}

    def module_options(self, modules: dict[str, nn.Module], ctx) -> dict:
        """The learned log Z of the contexts; none without the module (the batch estimate then)."""
        return {"log_z": modules["log_z"](ctx)} if "log_z" in modules else {}

    def after_step(self, modules: dict[str, nn.Module], out: EstimatorOutput,
                   whole: Callable[[Tensor], Tensor]) -> None:
        """First step: start log Z at the batch estimate mean(f/T - log p) (the residuals are log_z - that)."""
        log_z = modules.get("log_z")
        if log_z is not None and not bool(log_z.ready):
            log_z.initialise(-float(whole(out.weights).mean()))

    def estimate(self, policy, score_fn: ScoreFn, generator: Optional[torch.Generator],
                 log_z: Optional[Tensor] = None) -> EstimatorOutput:
        B, S, V = policy.mask.shape
        K, T = self.k, self.temperature
        if log_z is None and K < 2:
            raise ValueError(f"trajectory-balance without a learned log_z= estimates log Z from the batch and needs "
                             f"k >= 2 samples per context, got k={K}")
        if log_z is not None:
            if not isinstance(log_z, Tensor) or not log_z.is_floating_point():
                raise TypeError(f"log_z must be a floating-point tensor of shape (B,)=({B},), got {log_z!r:.80}")
            if log_z.dim() == 0:
                log_z = log_z.expand(B)
            if tuple(log_z.shape) != (B,):
                raise ValueError(f"log_z must have shape (B,)=({B},) or (), got {tuple(log_z.shape)}")
        index = policy.sample(K, generator)                                 # (B, K, S)
        f = call_scorer(score_fn, hard_rows(index, V), grad=False).float()  # (B, K)
        logp = policy.log_prob(index)                                       # (B, K), differentiable
        target = f.detach() / T
        if log_z is None:
            z = (target - logp.detach()).mean(1)                            # (B,) VarGrad estimate, detached
            delta = z[:, None] + logp - target
            loss = (delta ** 2).mean() * (K / (K - 1))
        else:
            z = log_z.float().to(logp.device)
            delta = z[:, None] + logp - target
            loss = (delta ** 2).mean()
        ent = policy.entropy(index)                                         # (B,)
        residual = delta.detach()
        stats = score_stats(f, ent)
        stats["log_z"] = float(z.detach().mean())
        stats["residual_std"] = float(residual.std()) if residual.numel() > 1 else 0.0
        sample = index[torch.arange(B, device=index.device), f.argmax(1)]
        return EstimatorOutput(sample=sample, samples=index, scores=f.detach(), loss=loss,
                               scorer_calls=B * K, stats=stats, weights=residual, entropy=ent)
