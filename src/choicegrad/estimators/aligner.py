"""The `aligner` method: pull the generator's rows towards good reference rows and away from bad ones
in a learned behavioural space (choicegrad.scorer.aligner), optionally plus the scorer's own signal.

Per-call options: embed (a function (B, S, V) float rows -> (B, D) unit vectors, e.g. an Aligner
bound to the batch's contexts), positives (B, P, D) and negatives (B, N, D) unit vectors of each
context's good and bad reference rows (data rows). The row is a relaxed sample of the logits
(`relaxation`: st-gumbel by default, or st / soft / gumbel) so the gradient reaches them. Loss per
context, InfoNCE with several positives:

    -log sum_p exp(cos(z, z_p) / T) + log (sum_p exp(cos(z, z_p) / T) + sum_n exp(cos(z, z_n) / T))
    - score_weight * score(x)

It is a biased training signal, not an estimator of the score's gradient: it reproduces what the
references share, in a space where a single decisive swap counts (see docs/aligner.md).
"""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from choicegrad.estimators.base import ScoreFn, call_scorer, check_tau, score_stats
from choicegrad.estimators.contract import Estimator, EstimatorOutput, register

RELAXATIONS = ("st-gumbel", "st", "soft", "gumbel")


def aligner_loss(z: Tensor, positives: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """(B,) InfoNCE loss of z (B, D) against positives (B, P, D) and negatives (B, N, D)."""
    pos = torch.einsum("bd,bpd->bp", z, positives) / temperature
    neg = torch.einsum("bd,bnd->bn", z, negatives) / temperature
    return torch.logsumexp(torch.cat([pos, neg], 1), 1) - torch.logsumexp(pos, 1)


class AlignerReferences(BaseModel):
    """The training step's options for the aligner: per context, `references` good and as many bad
    reference rows of the table, the good ones from its best `reference_share` of rows."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    references: int = Field(8, ge=1)
    reference_share: float = Field(0.2, ge=0, le=1)


@register("aligner")
class AlignerMethod(Estimator):
    """Contrastive pull towards good reference rows in aligner space (+ optional scorer signal)."""

    uses_tau = True
    family = "learned"
    call_options = ("tau", "embed", "positives", "negatives")
    required_options = ("embed", "positives", "negatives")
    needs_aligner = True
    step_options = AlignerReferences

    def __init__(self, tau: float = 1.0, temperature: float = 0.1, score_weight: float = 0.0,
                 relaxation: str = "st-gumbel"):
        self.tau = check_tau(tau)
        self.temperature = check_tau(temperature, "temperature")
        if not score_weight >= 0:
            raise ValueError(f"score_weight must be >= 0, got score_weight={score_weight!r}")
        self.score_weight = float(score_weight)
        if relaxation not in RELAXATIONS:
            raise ValueError(f"relaxation must be one of {', '.join(RELAXATIONS)}, got {relaxation!r}")
        self.relaxation = relaxation

    def estimate(self, policy, score_fn: ScoreFn, generator: Optional[torch.Generator], *,
                 tau: Optional[float] = None, embed=None, positives: Optional[Tensor] = None,
                 negatives: Optional[Tensor] = None) -> EstimatorOutput:
        if embed is None or positives is None or negatives is None:
            raise ValueError("aligner needs embed=, positives=(B, P, D) and negatives=(B, N, D)")
        B = policy.mask.shape[0]
        if positives.dim() != 3 or negatives.dim() != 3 or positives.shape[0] != B or negatives.shape[0] != B:
            raise ValueError(f"positives and negatives must be (B={B}, P, D) and (B={B}, N, D), got "
                             f"{tuple(positives.shape)} and {tuple(negatives.shape)}")
        x, index, ent = policy.relaxed(self.relaxation, check_tau(tau if tau is not None else self.tau), generator)
        loss = aligner_loss(embed(x), positives.detach(), negatives.detach(), self.temperature).mean()
        scores = call_scorer(score_fn, x, grad=self.score_weight > 0)
        if self.score_weight > 0:
            loss = loss - self.score_weight * scores.mean()
        return EstimatorOutput(sample=index, samples=index.unsqueeze(1), scores=scores.detach().unsqueeze(1),
                               loss=loss, scorer_calls=B, entropy=ent,
                               stats={**score_stats(scores.unsqueeze(1), ent), "aligner_loss": float(loss.detach())})
