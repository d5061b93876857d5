"""Resumable training: training state saved as safetensors + JSON, a time-based checkpoint schedule,
SIGINT/SIGTERM turned into "save, then stop" (and every tick a fault point of choicegrad.fs's step
faults, for the kill-then-resume tests).

A training loop calls `ckpt.tick(name)` once per step; when it returns True the loop saves its state
with `ckpt.save(name, state)` (every `every_minutes`, and at once after a signal) and, after a signal,
raises `Interrupted`. `ckpt.load(name)` gives the state back on `--resume`.

State is a nested dict of tensors, numbers, strings, lists, tuples and dicts (optimiser and scheduler
state dicts included). Tensors go to one safetensors file, the rest to JSON that names them; the JSON,
written last, is the commit point: it names the weights file of its own save and the sha256 of
the weights and the state together, so a kill between the two writes leaves the previous
checkpoint whole, and a changed byte in either is refused. Loading never unpickles; it takes
only a weights file of its own name pattern in its own folder, a regular file whose digest matches,
and refuses NaN or inf weights, so a damaged checkpoint is never trained on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import save as safetensors_bytes

from choicegrad import fs
from choicegrad.errors import InputError, Interrupted
from choicegrad.io import atomic_path, atomic_write_text, read_json, read_weights, sha256_bytes

#: Default minutes between checkpoints of a long phase.
CHECKPOINT_MINUTES = 2.0


def encode_state(state: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Nested state -> (JSON-able skeleton, flat tensors). Dicts with non-string keys, tuples and
    non-finite floats keep their types through decode_state."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = x.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: enc(v) for k, v in x.items()}
            return {"__items__": [[enc(k), enc(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v) for v in x]}
        if isinstance(x, list):
            return [enc(v) for v in x]
        if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
            return {"__float__": repr(x)}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot checkpoint a {type(x).__name__}")

    return enc(state), tensors


def decode_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of encode_state; KeyError/TypeError/ValueError on a skeleton that does not fit."""
    def dec(x: Any) -> Any:
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__items__" in x:
                return {dec(k): dec(v) for k, v in x["__items__"]}
            if "__tuple__" in x:
                return tuple(dec(v) for v in x["__tuple__"])
            if "__float__" in x:
                return float(x["__float__"])
            return {k: dec(v) for k, v in x.items()}
        if isinstance(x, list):
            return [dec(v) for v in x]
        return x

    return dec(skeleton)


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The states a training step draws from: its own generator and torch's global CPU generator."""
    return {"generator": generator.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(generator: torch.Generator, state: dict[str, torch.Tensor]) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])


@contextmanager
def seeded_rng(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Inside: torch's global RNGs (the CPU's, and `device`'s when it is a CUDA or MPS device) seeded
    with `seed`, for what can only draw from them (module initialisation, dropout); on leaving, the
    caller's states as they were (torch.random.fork_rng). A fit that runs inside owns its
    randomness: its draws do not depend on what the caller drew before, nor the caller's on the fit."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        mps = torch.mps.get_rng_state() if device.type == "mps" else None
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        if mps is not None:
            torch.mps.manual_seed(seed)
        try:
            yield
        finally:
            if mps is not None:
                torch.mps.set_rng_state(mps)


class Checkpointer:
    """Checkpoints of the training phases of one run, in folder `root` (RUN/.checkpoint while it is built).

    every_minutes: time between saves of a phase (0: at every tick). resume: load() returns saved
    state; otherwise it returns None. label: the run folder named in messages (default: root's
    parent). `stop` is set by catch_signals() when SIGINT/SIGTERM arrive. writer=False: save() writes
    nothing (data-parallel ranks other than 0, which get rank 0's state sent, never write).
    """

    def __init__(self, root: str | Path, every_minutes: float = CHECKPOINT_MINUTES, resume: bool = False,
                 label: str | Path | None = None, writer: bool = True):
        self.root, self.every, self.resume, self.writer = Path(root), 60.0 * every_minutes, resume, writer
        self.label = Path(label) if label is not None else self.root.parent
        self.last = time.monotonic()
        self.stop: Optional[int] = None

    def tick(self, name: str) -> bool:
        """Called once per training step of phase `name`: True when it is time to save (or a signal came)."""
        fs.step(name)
        return self.stop is not None or time.monotonic() - self.last >= self.every

    def check_stop(self, name: str) -> None:
        """After a save: raise Interrupted when a signal asked to stop."""
        if self.stop is not None:
            raise Interrupted(self.stop, self.label, name)

    def save(self, name: str, state: dict[str, Any]) -> None:
        """Write state atomically: weights file first (a fresh name), then the JSON that names it and
        its sha256; then the previous weights file is removed."""
        if not self.writer:
            self.last = time.monotonic()
            return
        skeleton, tensors = encode_state(state)
        fs.mkdirs(self.root)
        weights = f"{name}-{uuid.uuid4().hex[:8]}.safetensors"
        data = safetensors_bytes(tensors)
        with atomic_path(self.root / weights) as tmp:
            tmp.write_bytes(data)
        old = self._weights_of(name)
        digest = sha256_bytes(data + _canonical(skeleton))
        atomic_write_text(self.root / f"{name}.json",
                          json.dumps({"weights": weights, "digest": digest, "state": skeleton}) + "\n")
        if old and old != weights:
            fs.unlink(self.root / old)
        self.last = time.monotonic()

    def saved_elsewhere(self) -> None:
        """Another rank (rank 0) saved at this step: restart this checkpointer's clock without writing,
        so that its next tick comes when rank 0's does."""
        self.last = time.monotonic()

    def _weights_of(self, name: str) -> Optional[str]:
        """The weights file the JSON of `name` names, when it is one of this phase's own (never a
        path out of the folder: a damaged JSON must not make a save delete another file)."""
        try:
            weights = read_json(self.root / f"{name}.json")["weights"]
        except (InputError, KeyError, TypeError):
            return None
        return weights if isinstance(weights, str) and _own_weights(name, weights) else None

    def load(self, name: str) -> Optional[dict[str, Any]]:
        """The last state saved for `name` (None when not resuming or nothing was saved);
        InputError naming the file when it is unreadable, names a weights file that is not its own,
        or its weights are damaged (sha256) or hold NaN/inf."""
        path = self.root / f"{name}.json"
        if not self.resume or not os.path.lexists(path):
            return None
        hint = "start over with --overwrite"
        try:
            doc = read_json(path)
            weights, digest = doc["weights"], doc.get("digest")
            if not isinstance(weights, str) or not _own_weights(name, weights):
                raise InputError(str(path), [f"names the weights file {weights!r}, not one of its own "
                                             f"({name}-XXXXXXXX.safetensors in {self.root}); {hint}"])
            if not isinstance(digest, str):
                raise InputError(str(path), [f"holds no digest of its weights and state (written by an older "
                                             f"version, or changed), so it cannot be trusted; {hint}"])
            tensors = read_weights(self.root / weights, sha256=digest, finite=False, also=_canonical(doc["state"]))
        except InputError as exc:
            raise InputError(exc.source, [f"unreadable checkpoint: {p}" for p in exc.problems]
                             + ([hint] if hint not in " ".join(exc.problems) else [])) from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(str(path), [f"unreadable checkpoint ({type(exc).__name__}: {exc}); {hint}"]) from None
        try:
            state = decode_state(doc["state"], tensors)
        except Exception as exc:  # a skeleton that does not fit raises KeyError, TypeError, ValueError, RecursionError
            raise InputError(str(path), [f"unreadable checkpoint ({type(exc).__name__}: {exc}); {hint}"]) from None
        bad = _not_finite(state)
        if bad:
            raise InputError(str(self.root / weights), [f"unreadable checkpoint: {', '.join(bad[:5])} hold"
                                                        f"{'s' if len(bad) == 1 else ''} NaN (or inf in weights): "
                                                        f"damaged, or a diverged fit; {hint}"])
        return state

    def restore(self, name: str, state: dict[str, Any], apply) -> None:
        """apply(state) for the state load(name) gave; InputError naming the checkpoint when it does not
        fit (a state from other settings or a damaged one), never an error from inside training code."""
        try:
            apply(state)
        except Exception as exc:      # load_state_dict, optimiser and RNG restores raise their own types
            raise InputError(str(self.root / f"{name}.json"), [
                f"the checkpoint does not fit this run ({type(exc).__name__}: {str(exc)[:200]}); start over with "
                "--overwrite"]) from None

    @contextmanager
    def catch_signals(self) -> Iterator[Checkpointer]:
        """While inside: the first SIGINT/SIGTERM sets `stop` (the loop saves and raises Interrupted);
        a second one stops at once. Only in the main thread; elsewhere a no-op."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.stop is not None:            # second signal: no more waiting
                raise Interrupted(signum, self.label, "now")
            self.stop = signum

        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _canonical(skeleton: Any) -> bytes:
    """A training state's JSON part as the bytes its digest covers (key order and spacing fixed)."""
    return json.dumps(skeleton, sort_keys=True, separators=(",", ":")).encode()


def _own_weights(name: str, weights: str) -> bool:
    """Whether `weights` is a file name Checkpointer.save gives phase `name`: no folder, no way out."""
    return re.fullmatch(re.escape(name) + r"-[0-9a-f]{8}\.safetensors", weights) is not None


#: Top-level keys of a training state holding weights and optimiser moments: finite everywhere.
#: Other tensors (e.g. amortised search's best scores, -inf where none yet) may hold inf, never NaN.
WEIGHT_KEYS = ("model", "gen", "opt", "best_state", "log_z")


def _not_finite(state: Any) -> list[str]:
    """Paths ('gen/layer.weight') of the tensors in a decoded training state that hold NaN, or inf
    under WEIGHT_KEYS."""
    bad: list[str] = []

    def walk(x: Any, path: str, weights: bool) -> None:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() and not (torch.isfinite(x).all() if weights else not torch.isnan(x).any()):
                bad.append(path)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}/{k}" if path else str(k), weights or (not path and k in WEIGHT_KEYS))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{path}/{i}", weights)

    walk(state, "", False)
    return bad
