"""A run folder is one run: built in a hidden sibling, renamed into place when complete, written by
one process at a time, and sealed by a manifest that readers check.

    with RunWriter("runs/one", request, overwrite=False, resume=False) as w:
        ...write files into w.dir, checkpoints through w.checkpoints...
        w.commit()

- OUT/../.OUT.lock: an exclusive flock held while writing, holding the owner's pid, host and start
  time; a second writer gets InputError (exit 2). The kernel drops the lock of a killed process.
- OUT/../.OUT.partial: the run being built, with request.json (the settings it was started with)
  and .checkpoint/ (resumable training state). `resume=True` continues it, if its settings match.
- OUT/run.json: run id, settings and the sha256 of every file; written last, before the rename.
  `verify_run` refuses a folder whose files do not match it (files mixed from different runs).
- Replacing a finished run needs overwrite=True; the old run stays in place until the new one is
  complete, then the two are swapped by two renames (a crash between them is repaired on the next
  start).
- Data-parallel training (torchrun): `run_writer` gives rank 0 the RunWriter and every other rank a
  RankView that writes nothing; rank 0 sends the other ranks what they need of the folder (its
  checkpoint on a resume), so one process reads and writes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Optional

from choicegrad import distributed
from choicegrad.checkpoints import CHECKPOINT_MINUTES, Checkpointer
from choicegrad.errors import InputError
from choicegrad.io import atomic_write_text

MANIFEST = "run.json"
REQUEST = "request.json"
CHECKPOINT_DIR = ".checkpoint"
#: Files whose sha256 readers check: what generation and scoring read (logs and reports may be edited).
VERIFIED = ("scorer.", "generator.", "aligner.", "feasibility.", "contexts.csv")
#: Settings that may change when a run is resumed.
RESUMABLE_CHANGES = ("max_minutes",)
#: Settings added after runs were first written, with the value a run written before them had: an
#: interrupted run from then is compared as if it had asked for that value (so it resumes only with it).
ADDED_SETTINGS = {"generator_fit.distill": 0.0, "generator_fit.distill_sweeps": 2}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _sibling(out: Path, suffix: str) -> Path:
    return out.parent / f".{out.name}.{suffix}"


class RunLock:
    """The exclusive write lock of run folder `out` (a flock on OUT/../.OUT.lock)."""

    def __init__(self, out: str | Path, name: str = "out"):
        self.out, self.name = Path(out), name
        self.path = _sibling(self.out, "lock")
        self.fd: Optional[int] = None

    def acquire(self) -> RunLock:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(self.name, [f"cannot create the folder {self.out.parent}: {exc.strerror}"]) from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise InputError(self.name, [f"cannot write in {self.out.parent}: {exc.strerror}"]) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 4096).decode(errors="replace").strip()
                os.close(fd)
                raise InputError(self.name, [f"{self.out} is being written by another choicegrad process "
                                             f"({_describe_owner(owner)}); wait for it to finish or choose "
                                             "another folder"]) from None
            try:  # the previous owner may have removed the file between our open and flock: retry
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_owner(text: str) -> str:
    try:
        o = json.loads(text)
        return f"pid {o['pid']} on host {o['host']}, since {o['started']}"
    except (ValueError, KeyError, TypeError):
        return "owner unknown"


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every setting that differs (nested dicts flattened with dots)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, ADDED_SETTINGS.get(f"{prefix}{key}")), new.get(key)
        if key in RESUMABLE_CHANGES:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


class RunWriter:
    """Write run folder `out` as one run (see the module docstring).

    request: the settings of the run (JSON-able); a resumed run must be started with the same ones
    (RESUMABLE_CHANGES aside). After __enter__: `dir` is the folder to write in, `checkpoints` its
    Checkpointer, `resuming` whether a previous attempt's work is there, `finished` whether `out`
    already holds this very run (resume of a finished run: nothing to do), `notes` lines to show.
    """

    def __init__(self, out: str | Path, request: dict[str, Any], *, overwrite: bool = False, resume: bool = False,
                 checkpoint_minutes: float = CHECKPOINT_MINUTES, name: str = "out"):
        self.out, self.request, self.name = Path(out), json.loads(json.dumps(request)), name
        self.overwrite, self.resume = overwrite, resume
        self.dir = _sibling(self.out, "partial")
        self.lock = RunLock(self.out, name)
        self.checkpoints = Checkpointer(self.dir / CHECKPOINT_DIR, checkpoint_minutes, resume=resume, label=self.out)
        self.resuming = self.finished = self.committed = False
        self.notes: list[str] = []

    def __enter__(self) -> RunWriter:
        if self.out.exists() and not self.out.is_dir():
            raise InputError(self.name, [f"{self.out} exists and is not a folder"])
        self.lock.acquire()
        try:
            self._repair_swap()
            self._prepare()
        except BaseException:
            self.lock.release()
            raise
        return self

    def _repair_swap(self) -> None:
        """Finish (or undo) a replacement of `out` that a crash cut between its two renames."""
        olds = sorted(self.out.parent.glob(f".{self.out.name}.old-*"))
        if not olds:
            return
        if not self.out.exists():
            if (self.dir / MANIFEST).is_file():
                os.replace(self.dir, self.out)
            else:
                os.replace(olds.pop(), self.out)
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)

    def _prepare(self) -> None:
        holds_run = self.out.is_dir() and any(self.out.iterdir())
        if self.dir.exists() and not (self.dir / REQUEST).is_file():
            shutil.rmtree(self.dir)                    # killed before it held anything: nothing to resume
        if self.dir.exists():
            if self.resume:
                self._check_request(self.dir / REQUEST)
                self.resuming = True
                return
            if not self.overwrite:
                raise InputError(self.name, [f"an interrupted run of {self.out} is in {self.dir}: pass --resume to "
                                             "continue it, or --overwrite to start over"])
            shutil.rmtree(self.dir)
        if holds_run and self.resume and (self.out / MANIFEST).is_file() and not self.overwrite:
            self._check_request(self.out / MANIFEST)
            self.finished = True
            self.notes.append(f"nothing to resume: {self.out} is already finished")
            return
        if holds_run and not self.overwrite:
            raise InputError(self.name, [f"{self.out} already holds a run; pass --overwrite to replace it (the old "
                                         "run stays in place until the new one is complete)"])
        if self.resume:
            self.notes.append(f"nothing to resume for {self.out}: starting from the beginning")
        try:
            self.dir.mkdir()
            atomic_write_text(self.dir / REQUEST, json.dumps(self.request, indent=2) + "\n")
        except OSError as exc:
            raise InputError(self.name, [f"cannot write {self.dir}: {exc.strerror}"]) from None

    def _check_request(self, path: Path) -> None:
        try:
            old = json.loads(path.read_text())
            old = old.get("request", old) if path.name == MANIFEST else old
        except (OSError, ValueError) as exc:
            raise InputError(str(path), [f"unreadable ({exc}); start over with --overwrite"]) from None
        diff = _differences(old if isinstance(old, dict) else {}, self.request)
        if diff:
            raise InputError(self.name, [f"the run in {path.parent} was started with other settings; resume it with "
                                         "the same ones, or start over with --overwrite"] + diff)

    def commit(self) -> None:
        """Seal the run (run.json with every file's sha256) and move it into place."""
        shutil.rmtree(self.dir / CHECKPOINT_DIR, ignore_errors=True)
        (self.dir / REQUEST).unlink(missing_ok=True)
        for stale in self.dir.glob(".*.tmp"):          # temporary files of writes a kill cut short
            stale.unlink()
        run_id = uuid.uuid4().hex[:12]
        files = {p.name: sha256_file(p) for p in sorted(self.dir.iterdir()) if p.is_file() and not p.name.startswith(".")}
        manifest = {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "request": self.request,
                    "files": files}
        atomic_write_text(self.dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        if self.out.exists():
            if any(self.out.iterdir()):
                old = _sibling(self.out, f"old-{run_id}")
                os.replace(self.out, old)
                os.replace(self.dir, self.out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                self.out.rmdir()
                os.replace(self.dir, self.out)
        else:
            os.replace(self.dir, self.out)
        self.committed = True

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None and not self.committed and self.dir.exists() and not self._has_work():
                shutil.rmtree(self.dir, ignore_errors=True)   # nothing worth resuming: leave no trace
        finally:
            self.lock.release()

    def _has_work(self) -> bool:
        return any(p.name != REQUEST for p in self.dir.iterdir())


class RankView:
    """What a data-parallel rank other than 0 holds of the run rank 0 writes: the folder's path, whether
    it resumes, and a Checkpointer for the signal and save schedule whose save() writes nothing (the
    checkpoint itself comes from rank 0). commit() does nothing."""

    def __init__(self, out: Path, state: dict[str, Any], checkpoint_minutes: float):
        self.out, self.dir = out, Path(state["dir"])
        self.resuming, self.finished, self.committed = state["resuming"], state["finished"], False
        self.notes: list[str] = []
        self.checkpoints = Checkpointer(self.dir / CHECKPOINT_DIR, checkpoint_minutes, resume=state["resuming"],
                                        label=out, writer=False)

    def commit(self) -> None:
        pass


@contextmanager
def run_writer(out: str | Path, request: dict[str, Any], **options: Any) -> Iterator[RunWriter | RankView]:
    """RunWriter(out, request, **options) in one process; under torchrun, the RunWriter on rank 0 and
    a RankView of its folder on the others. Rank 0's refusal (a locked folder, a run already there)
    is raised on every rank, so no rank waits for a run that will not start."""
    if not distributed.current().distributed:
        with RunWriter(out, request, **options) as w:
            yield w
        return
    if not distributed.current().main:
        state = distributed.share()
        if "error" in state:
            raise InputError(state["error"][0], state["error"][1])
        yield RankView(Path(out), state, options.get("checkpoint_minutes", CHECKPOINT_MINUTES))
        return
    with ExitStack() as stack:
        try:
            writer = stack.enter_context(RunWriter(out, request, **options))
        except InputError as exc:
            distributed.share({"error": (exc.source, exc.problems)})
            raise
        except BaseException as exc:
            distributed.share({"error": (str(out), [f"rank 0 could not start the run: {exc}"])})
            raise
        distributed.share({"dir": str(writer.dir), "resuming": writer.resuming, "finished": writer.finished})
        yield writer


def verify_run(path: str | Path) -> Optional[dict[str, Any]]:
    """Check RUN against its run.json: every model file listed (VERIFIED) present with its sha256,
    no other weights file beside them. Returns the manifest (None for a folder written before manifests existed);
    InputError naming the first file that does not belong."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(str(manifest_path), [f"unreadable run manifest ({exc})"]) from None
    run_id = manifest.get("run_id", "?")
    problems = []
    for name, digest in files.items():
        if not name.startswith(VERIFIED):
            continue
        f = path / name
        if not f.is_file():
            problems.append(f"{f} is missing (listed in run.json of run {run_id})")
        elif sha256_file(f) != digest:
            problems.append(f"{f} does not belong to run {run_id}: its sha256 differs from run.json "
                            "(files of different runs mixed, or a changed file)")
    extra = [p.name for p in path.iterdir() if p.suffix in (".safetensors",) and p.name not in files]
    problems += [f"{path / n} is not part of run {run_id}" for n in sorted(extra)]
    if problems:
        raise InputError(str(path), problems)
    return manifest
