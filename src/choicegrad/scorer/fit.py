"""Training loops: plain PyTorch, seeded, device-agnostic."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator
from tqdm.auto import tqdm

from choicegrad.data.table import TableData, check_fit_rows, score_stats
from choicegrad.device import device_field
from choicegrad.metrics import regression_report
from choicegrad.scorer.model import Scorer, ScorerConfig, pair_rank


class ScorerFit(BaseModel):
    """How to fit a scorer. Stored with the run."""

    model: ScorerConfig = Field(default_factory=ScorerConfig)
    ensemble: int = Field(1, ge=1, description="members k; score = mean - beta * std")
    beta: float = Field(0.0, ge=0.0, description="pessimism of the ensemble score")
    epochs: int | None = Field(None, ge=1, description="None: about 3e7 row visits, clipped to 10..200 epochs")
    batch_size: int | None = Field(None, ge=1, description="None: n_train / 256, clipped to 128..4096")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    ranking: float = Field(0.0, ge=0.0, description="weight of the pairwise ranking loss")
    patience: int = Field(6, ge=1, description="epochs without validation gain before stopping")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0, lt=0.5)
    seed: int = 0
    max_minutes: float | None = Field(None, gt=0, description="time limit for the whole fit, all members together; "
                                      "once it passes, the member in training stops after its epoch and each "
                                      "later member trains one epoch")
    device: str = "cpu"

    @field_validator("device")
    @classmethod
    def _device_exists(cls, value: str) -> str:
        return device_field(value)


@dataclass
class ScorerResult:
    scorer: Scorer
    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    seconds: float


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy; return a torch.Generator for explicit randomness."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train / validation / test positions."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = max(1, int(round(n * val_fraction))), int(round(n * test_fraction))
    return perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test]


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pairwise logistic loss on random in-batch pairs: prefer the row with the higher target."""
    j = torch.randperm(len(pred), generator=generator).to(pred.device)
    sign = torch.sign(target - target[j])
    return (torch.nn.functional.softplus(-sign * (pred - pred[j])) * sign.abs()).mean()


def fit_scorer(data: TableData, fit: ScorerFit | None = None, progress: bool | None = None,
               extra_eval: dict[str, TableData] | None = None) -> ScorerResult:
    """Fit a Scorer on `data` (MSE on the standardised score, optional ranking loss, early stopping).

    A random `val_fraction` of rows drives early stopping, `test_fraction` is held out for the reported
    metrics; `extra_eval` adds named held-out sets (e.g. the unseen upper half of each context).
    progress=None shows a bar only on a terminal. One function on purpose (over ~60 lines): the members
    share one seeded generator, deadline, progress bar and history, which a split would pass around.
    """
    check_fit_rows(data)
    fit = fit or ScorerFit()
    start = time.perf_counter()
    gen = seed_everything(fit.seed)
    device = torch.device(fit.device)
    train_idx, val_idx, test_idx = split_indices(len(data), fit.val_fraction, fit.test_fraction, fit.seed)
    y = data.y
    y_mean, y_std = score_stats(y[train_idx])
    # the automatic pairwise term is decided on the training rows as well as the space
    model = fit.model.model_copy(update={"pairwise": pair_rank(fit.model, data.space.sizes, len(train_idx))})
    scorer = Scorer(data.space, data.context, data.score, model, k=fit.ensemble, beta=fit.beta,
                    y_mean=y_mean, y_std=y_std).to(device)
    tensors = [t.to(device) for t in (data.rows, data.ctx_cat, data.ctx_num)]
    target = ((y.double() - y_mean) / y_std).float().to(device)
    deadline = start + 60 * fit.max_minutes if fit.max_minutes else math.inf
    history: list[dict[str, float]] = []
    train_t = torch.as_tensor(train_idx, device=device)
    val_t = torch.as_tensor(val_idx, device=device)

    def val_loss(member) -> float:
        member.eval()
        with torch.no_grad():
            losses = [torch.nn.functional.mse_loss(member(*(t[b] for t in tensors)), target[b], reduction="sum")
                      for b in val_t.split(65536)]
        member.train()
        return float(sum(losses)) / len(val_t)

    n_train = len(train_idx)
    epochs = fit.epochs or int(np.clip(math.ceil(3e7 / n_train), 10, 200))
    batch_size = fit.batch_size or int(np.clip(n_train // 256, 128, 4096))
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    bar = tqdm(total=fit.ensemble * epochs, desc="fit scorer", unit="epoch",
               disable=(not progress) if progress is not None else None, leave=False)
    for m, member in enumerate(scorer.members):
        opt = torch.optim.AdamW(member.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=fit.lr, total_steps=epochs * steps_per_epoch,
                                                    pct_start=0.05)
        best, best_state, bad = math.inf, None, 0
        for epoch in range(epochs):
            member.train()
            order = train_t[torch.randperm(len(train_t), generator=gen).to(device)]
            total = 0.0
            for batch in order.split(batch_size):
                pred = member(*(t[batch] for t in tensors))
                loss = torch.nn.functional.mse_loss(pred, target[batch])
                if fit.ranking:
                    loss = loss + fit.ranking * ranking_loss(pred, target[batch], gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(batch)
            vl = val_loss(member)
            history.append({"member": m, "epoch": epoch, "train_loss": total / len(train_idx), "val_mse": vl})
            bar.update(1)
            bar.set_postfix(member=m, train=f"{total / len(train_idx):.4f}", val=f"{vl:.4f}")
            if vl < best - 1e-5:
                best, bad = vl, 0
                best_state = {k: v.detach().clone() for k, v in member.state_dict().items()}
            else:
                bad += 1
            if bad >= fit.patience or time.perf_counter() > deadline:
                break
        bar.update(epochs - epoch - 1)
        if best_state is not None:
            member.load_state_dict(best_state)
    bar.close()
    scorer.eval()

    def report(sub: TableData) -> dict[str, float]:
        pred = scorer.predict(sub.rows, sub.ctx_cat, sub.ctx_num).numpy()
        return regression_report(sub.y.numpy(), pred, sub.context_groups())

    metrics = {"validation": report(data.subset(val_idx))}
    if len(test_idx):
        metrics["test"] = report(data.subset(test_idx))
    for name, sub in (extra_eval or {}).items():
        metrics[name] = report(sub)
    return ScorerResult(scorer.cpu(), metrics, history, time.perf_counter() - start)
