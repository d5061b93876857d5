"""Score-function (REINFORCE, Williams 1992) estimator: needs only score values, so it also works for
black-box rewards. The scorer is called under torch.no_grad() with one-hot rows, once per call.
"""

from __future__ import annotations

from typing import Optional

import torch

from choicegrad.estimators.base import ScoreFn, call_scorer, check_int, hard_rows, score_stats, unknown_name_error
from choicegrad.estimators.contract import Estimator, EstimatorOutput, register
from choicegrad.estimators.shard import batch_shard

BASELINES = ("none", "mean", "rloo", "greedy")


@register("reinforce")
class Reinforce(Estimator):
    """REINFORCE with K samples per context and a baseline; loss = -mean_{b,k}(A_bk * log p(x_bk)).

    baseline: 'none' (A = f); 'mean' (A = f - mean score of all *other* B*K-1 samples in the call, a
    leave-one-out batch mean so the estimate stays unbiased); 'rloo' (A = f - mean of the other K-1
    samples of the same context, needs k >= 2; Kool et al. 2019); 'greedy' (A = f - score of the
    greedy row of the same context (argmax slot by slot), self-critical, Rennie et al. 2017; costs B extra scorer rows).
    All four are unbiased. entropy: coefficient c adding -c * (per-context entropy) to the loss.
    `sample` is the best-scoring of the K samples (first on ties); `weights` are the advantages A.
    """

    family = "score-function"
    fit_defaults = {"k": "samples"}
    training_ignores = ("entropy",)   # a training loop adds its own entropy bonus, to every method

    def __init__(self, *, k: int = 4, baseline: str = "rloo", entropy: float = 0.0):
        k = check_int(k, "k")
        base = str(baseline).strip().lower()
        if base not in BASELINES:
            raise unknown_name_error(baseline, BASELINES, what="baseline")
        if base == "rloo" and int(k) < 2:
            raise ValueError(f"baseline 'rloo' needs k >= 2 samples per context, got k={k}")
        self.k, self.baseline, self.entropy = int(k), base, float(entropy)

    def estimate(self, policy, score_fn: ScoreFn, generator: Optional[torch.Generator]) -> EstimatorOutput:
        B, S, V = policy.mask.shape
        K = self.k
        index = policy.sample(K, generator)                                 # (B, K, S)
        rows = hard_rows(index, V)                                          # (B, K, S, V), or (B, K, S)
        if self.baseline == "greedy":  # context-major: each context's K samples, then its greedy row
            rows = torch.cat([rows, hard_rows(policy.greedy(), V)[:, None]], 1)
        all_scores = call_scorer(score_fn, rows, grad=False)                # (B, K or K + 1)
        f = all_scores[:, :K]
        if self.baseline == "none":
            b = torch.zeros_like(f)
        elif self.baseline == "mean":   # over the global batch under data parallelism (a BatchShard)
            shard = batch_shard(generator)
            n = (shard.size if shard is not None else B) * K
            total = shard.whole(f).sum() if shard is not None else f.sum()
            b = (total - f) / (n - 1) if n > 1 else torch.zeros_like(f)
        elif self.baseline == "rloo":
            b = (f.sum(1, keepdim=True) - f) / (K - 1)
        else:
            b = all_scores[:, K:].expand(B, K)
        adv = (f - b).detach()
        loss = -(adv * policy.log_prob(index)).mean()
        ent = policy.entropy(index)                                         # (B,)
        if self.entropy:
            loss = loss - self.entropy * ent.mean()
        stats = score_stats(f, ent)
        stats["baseline_mean"] = float(b.float().mean())
        stats["advantage_std"] = float(adv.float().std()) if adv.numel() > 1 else 0.0
        sample = index[torch.arange(B, device=index.device), f.argmax(1)]
        return EstimatorOutput(sample=sample, samples=index, scores=f.detach(), loss=loss,
                               scorer_calls=B * int(rows.shape[1]), stats=stats, weights=adv, entropy=ent)
