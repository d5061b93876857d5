"""A run folder is one run: built in a hidden sibling, sealed and moved into place in one rename
when complete, written by one process at a time, and checked by readers against its manifest.

    with RunWriter("runs/one", request, overwrite=False, resume=False) as w:
        ...write files into w.dir, checkpoints through w.checkpoints...
        w.commit()

- OUT/../.OUT.lock: an exclusive flock held for the whole operation, holding the owner's pid, host
  and start time; a second writer gets InputError (exit 2). The kernel drops the lock of a killed
  process. A command that must hold it longer than the writing (a design round) takes it first and
  hands it to the RunWriter.
- OUT/../.OUT.partial: the run being built, with request.json (the settings it was started with)
  and .checkpoint/ (resumable training state). `resume=True` continues it, if its settings match.
- The seal (`commit`): run.json (run id, settings, the sha256 of every file, the id of the run it
  replaces) is written into the partial and flushed; only then are request.json and the checkpoints
  removed, and the partial takes OUT's place in one rename (an atomic exchange when OUT holds the run
  it replaces). A start after a kill at any point finds either the interrupted run (resumable), or
  a sealed partial, whose move it finishes, or the finished run.
- `overwrite=True` replaces only a run folder (a valid run.json of ours, or a folder written before
  manifests that holds a choicegrad scorer); any other folder is refused and left untouched.
  Replaced and discarded folders are first renamed to OUT/../.OUT.old-ID, then removed.
- `verify_run` refuses a folder whose files do not match its run.json (files mixed from different
  runs, or changed). Which files it checks, and what a folder written before run.json may hold,
  the writer of each kind of folder declares (FolderFiles: FITTED_RUN_FILES, the default, for a
  fitted run; the designer's STATE_FILES for its state); this module knows no designer file.
- Data-parallel training (torchrun): `run_writer` gives rank 0 the RunWriter and every other rank a
  RankView that writes nothing; rank 0 sends the other ranks what they need of the folder (its
  checkpoint on a resume), so one process reads and writes it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from choicegrad import distributed, fs
from choicegrad.checkpoints import CHECKPOINT_MINUTES, Checkpointer
from choicegrad.errors import InputError, os_error, os_reason
from choicegrad.io import atomic_write_text, read_json, sha256_file

MANIFEST = "run.json"
REQUEST = "request.json"
CHECKPOINT_DIR = ".checkpoint"
#: Settings that may change when a run is resumed.
RESUMABLE_CHANGES = ("max_minutes",)
#: Settings added later that an older interrupted run lacks: compared only when both runs have them.
COMPARED_WHEN_BOTH = ("data_sha256",)


@dataclass(frozen=True)
class FolderFiles:
    """What one kind of run folder holds, declared by the code that writes it (choicegrad.run for a
    fitted run, the designer for its state): `verified`, the name prefixes of the files whose sha256
    readers check (what generation and scoring read; logs and reports may be edited), and `legacy`,
    the names a folder of that kind written before manifests (run.json) may hold."""

    verified: tuple[str, ...]
    legacy: tuple[str, ...]

    def plus(self, verified: tuple[str, ...] = (), legacy: tuple[str, ...] = ()) -> FolderFiles:
        return FolderFiles(self.verified + tuple(verified), self.legacy + tuple(legacy))


#: A fitted run's files (choicegrad.run): scorer, generator, aligner and the training contexts; an
#: item run's items record, catalogue and lists (items.json, items.csv, lists.csv), which generation
#: and scoring read as much as the weights.
FITTED_RUN_FILES = FolderFiles(
    verified=("scorer.", "generator.", "aligner.", "contexts.csv", "items.", "lists.csv"),
    legacy=("scorer.safetensors", "scorer.json", "scorer_metrics.json", "generator.safetensors", "generator.json",
            "aligner.safetensors", "aligner.json", "aligner_fit.json", "contexts.csv", "metrics.csv", "config.json"))


def _sibling(out: Path, suffix: str) -> Path:
    return out.parent / f".{out.name}.{suffix}"


def check_out_path(out: str | Path, name: str = "out") -> Path:
    """InputError naming `name` unless `out` can be a run folder that is renamed into place: a path
    ending in a name (not ".", ".." or "/"), not a mount point, not the current folder or one above
    it, and not an existing file."""
    out = Path(out)
    if out.name in ("", ".", "..") or str(out) in (os.sep, "//"):
        raise InputError(name, [f'"{out}" does not end in a folder name; a run is built beside its folder and moved '
                                "into place, so name one, e.g. runs/one"])
    here = Path.cwd().resolve()
    target = out.resolve()
    if target == here or target in here.parents:
        raise InputError(name, [f"{out} is the current folder or one above it; name a run folder inside it"])
    if out.is_symlink():
        raise InputError(name, [f"{out} is a symbolic link (to {os.readlink(out)}); a run is moved into place by "
                                "renaming, which would replace the link, not its target: name the folder itself"])
    if out.is_dir() and os.path.ismount(out):
        raise InputError(name, [f"{out} is a mount point, which cannot be renamed; name a run folder inside it"])
    if out.exists() and not out.is_dir():
        raise InputError(name, [f"{out} exists and is not a folder"])
    return out


def check_outside(out: str | Path, run: str | Path, name: str = "out") -> None:
    """InputError naming `name` when output file `out` would land inside run folder `run` (or its
    hidden siblings): a file written there would make the run fail its run.json."""
    target, folder = Path(os.path.abspath(out)), Path(os.path.abspath(run))
    inside = folder in target.parents or target.parent == folder.parent and target.name.startswith(f".{folder.name}.")
    if inside:
        raise InputError(name, [f"{out} is inside the run folder {run}, whose files must stay as written; write "
                                "it elsewhere"])


def is_run_folder(path: str | Path) -> bool:
    """Whether `path` is a folder choicegrad wrote as a whole: its run.json names a run id and its
    files, or (written before manifests) it holds a choicegrad scorer.json."""
    path = Path(path)
    try:
        manifest = read_json(path / MANIFEST) if (path / MANIFEST).is_file() else None
    except InputError:
        manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("run_id"), str) and isinstance(manifest.get("files"), dict):
        return True
    try:
        scorer = read_json(path / "scorer.json") if not (path / MANIFEST).exists() and (path / "scorer.json").is_file() else None
    except InputError:
        return False
    return isinstance(scorer, dict) and scorer.get("kind") == "choicegrad.Scorer"


def foreign_files(path: Path, files: FolderFiles = FITTED_RUN_FILES) -> list[str]:
    """Names in run folder `path` that its run.json does not list (nor run.json itself, nor our own
    temporary files; without run.json: not among `files.legacy`): a user's, which overwrite must not
    delete."""
    manifest = _manifest(path)
    ours = set(manifest["files"]) if manifest is not None and isinstance(manifest.get("files"), dict) else set(files.legacy)
    return sorted(p.name for p in path.iterdir()
                  if p.name not in ours and p.name != MANIFEST and not TEMPORARY.fullmatch(p.name))


def _manifest(path: Path) -> Optional[dict]:
    """The run.json of folder `path` as a dict, or None when absent or unreadable."""
    try:
        doc = read_json(path / MANIFEST)
    except InputError:
        return None
    return doc if isinstance(doc, dict) else None


class RunLock:
    """The exclusive write lock of run folder `out` (a flock on OUT/../.OUT.lock)."""

    def __init__(self, out: str | Path, name: str = "out"):
        self.out, self.name = Path(out), name
        self.path = _sibling(self.out, "lock")
        self.fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> RunLock:
        try:
            fs.mkdirs(self.out.parent)
        except OSError as exc:
            raise InputError(self.name, [f"cannot create the folder {self.out.parent}: {os_reason(exc)}"]) from None
        while True:
            try:
                fs.point("lock", self.path)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
            except OSError as exc:
                what = ("is a symbolic link, not a lock file choicegrad made; remove it" if exc.errno == errno.ELOOP
                        else "is a folder, not a lock file; remove it" if exc.errno == errno.EISDIR else os_reason(exc))
                raise InputError(self.name, [f"cannot take the lock {self.path}: it {what}" if exc.errno in (
                    errno.ELOOP, errno.EISDIR) else f"cannot write {self.path}: {what}"]) from None
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                os.close(fd)
                raise InputError(self.name, [f"cannot take the lock {self.path}: it is not a lock file choicegrad made "
                                             f"({'a link to another file' if stat.S_ISREG(info.st_mode) else 'not a file'}); "
                                             "remove it"])
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 4096, 0).decode(errors="replace").strip()
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
        try:               # who holds it, for the message a second writer gets; the flock is the lock
            fs.point("write", self.path)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(owner).encode(), 0)
        except OSError:
            pass
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            fs.unlink(self.path)
        except OSError:                    # a stale lock file is harmless: the flock goes with the fd
            pass
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


def _differences(old: dict, new: dict, added: Mapping[str, Any] = {}, prefix: str = "") -> list[str]:
    """'key: old -> new' for every setting that differs (nested dicts flattened with dots). added:
    settings introduced after runs were first written ('generator_fit.distill'), with the value an
    older run had: a run that lacks one is compared as if it had asked for that value."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, added.get(f"{prefix}{key}")), new.get(key)
        if key in RESUMABLE_CHANGES or key in COMPARED_WHEN_BOTH and (key not in old or key not in new):
            continue
        if key == "data" and isinstance(a, str) and isinstance(b, str) and _same_file(a, b):
            continue                          # one file named two ways (relative, absolute, through a link)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, added, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


#: A folder of ours beside OUT on its way out: .OUT.old- and 12 hex digits (a user's .OUT.old-keep is not ours).
OLD_ID = re.compile(r"old-[0-9a-f]{12}")
#: A temporary file of the atomic writer (choicegrad.fs.atomic_path): .NAME.PID-XXXXXXXX.tmp
TEMPORARY = re.compile(r"\..+\.[0-9]+-[A-Za-z0-9_]+\.tmp")


def _old_folders(out: Path) -> list[Path]:
    prefix = f".{out.name}."
    return sorted(p for p in out.parent.glob(f"{fs.glob_escape(prefix)}old-*")
                  if OLD_ID.fullmatch(p.name[len(prefix):]))


def _discard(folder: Path, out: Path) -> None:
    """Remove a folder of ours beside `out`: renamed to .OUT.old-ID first (one step), so a kill
    during the removal leaves only a folder that the next start removes too."""
    if not folder.exists():
        return
    trash = _sibling(out, f"old-{uuid.uuid4().hex[:12]}")
    fs.replace(folder, trash)
    fs.rmtree(trash)


class RunWriter:
    """Write run folder `out` as one run (see the module docstring).

    request: the settings of the run (JSON-able); a resumed run must be started with the same ones
    (RESUMABLE_CHANGES aside). After __enter__: `dir` is the folder to write in, `checkpoints` its
    Checkpointer, `resuming` whether a previous attempt's work is there, `finished` whether `out`
    already holds this very run (resume of a finished run: nothing to do), `notes` lines to show.
    lock: the folder's RunLock, already held by the caller for a longer operation (kept held on exit).
    resumable: whether an interrupted write can be resumed (resume=True); a design state is rewritten whole.
    files: what this kind of folder holds (FolderFiles: verified files, names before manifests);
    added_settings: settings introduced after runs were first written, with the value an older run
    had (_differences). Messages name the arguments overwrite and resume; the CLI maps them to flags.
    An OSError inside (disk full, ...) leaves as InputError naming the path, saying what is intact.
    Many parameters (__init__): the folder and its settings, then keyword options that each kind of
    folder (a fitted run, a design state, a benchmark) sets differently.
    """

    def __init__(self, out: str | Path, request: dict[str, Any], *, overwrite: bool = False, resume: bool = False,
                 checkpoint_minutes: float = CHECKPOINT_MINUTES, name: str = "out", lock: Optional[RunLock] = None,
                 resumable: bool = True, files: FolderFiles = FITTED_RUN_FILES,
                 added_settings: Mapping[str, Any] = {}):
        self.out, self.request, self.name = Path(out), json.loads(json.dumps(request)), name
        self.overwrite, self.resume, self.resumable = overwrite, resume, resumable
        self.files, self.added_settings = files, dict(added_settings)
        self.dir = _sibling(self.out, "partial")
        if lock is not None and (not lock.held or lock.path != RunLock(self.out).path):
            raise ValueError(f"lock: expected the held lock of {self.out}")
        self.lock, self._own_lock = lock or RunLock(self.out, name), lock is None
        self.checkpoints = Checkpointer(self.dir / CHECKPOINT_DIR, checkpoint_minutes, resume=resume, label=self.out)
        self.resuming = self.finished = self.committed = self._created = False
        self.notes: list[str] = []

    def __enter__(self) -> RunWriter:
        check_out_path(self.out, self.name)
        if self._own_lock:
            self.lock.acquire()
        try:
            self._recover()
            self._prepare()
        except BaseException:
            if self._created and self.dir.exists():
                try:
                    _discard(self.dir, self.out)       # made by this start, holding nothing yet
                except OSError:
                    pass
            self._release()
            raise
        return self

    def _release(self) -> None:
        if self._own_lock:
            self.lock.release()

    def _recover(self, remove_old: bool = True) -> None:
        """Finish what a kill cut short: the move of a sealed run into place, a replacement cut
        between its two renames, and (remove_old) the removal of old folders (.OUT.old-ID)."""
        if self.dir.is_dir() and (self.dir / MANIFEST).is_file():
            sealed = _manifest(self.dir)
            if sealed is not None and _verifies(self.dir, self.files):
                self._move_into_place(sealed)
            elif (self.dir / REQUEST).is_file():          # not sealed after all: resumable as it was
                fs.unlink(self.dir / MANIFEST)
        for old in _old_folders(self.out):
            if not self.out.exists() and _manifest(old) is not None and _verifies(old, self.files):
                fs.replace(old, self.out)                  # a replacement cut between its renames, undone
            elif remove_old:
                fs.rmtree(old)

    def _prepare(self) -> None:
        holds_run = self.out.is_dir() and any(self.out.iterdir())
        if os.path.lexists(self.dir) and (self.dir.is_symlink() or not self.dir.is_dir()):
            raise InputError(self.name, [f"{self.dir} is not a folder choicegrad made (a file or a link); it is where "
                                         "a run is built, so move it away"])
        if self.dir.exists() and not (self.dir / REQUEST).is_file():
            if any(not TEMPORARY.fullmatch(p.name) for p in self.dir.iterdir()):
                raise InputError(self.name, [f"{self.dir} holds files but no {REQUEST}: choicegrad did not leave it "
                                             "like this, so it is not removed; move it away"])
            _discard(self.dir, self.out)               # killed before it held anything: nothing to resume
        if self.dir.exists():
            if self.resume:
                self._check_request(self.dir / REQUEST)
                self.resuming = True
                return
            if not self.overwrite:
                raise InputError(self.name, [f"an interrupted run of {self.out} is in {self.dir}: pass resume=True to "
                                             "continue it, or overwrite=True to start over"])
            _discard(self.dir, self.out)
        if holds_run and self.resume and (self.out / MANIFEST).is_file() and not self.overwrite:
            self._check_request(self.out / MANIFEST)
            self.finished = True
            self.notes.append(f"nothing to resume: {self.out} is already finished")
            return
        if holds_run and not self.overwrite:
            raise InputError(self.name, [f"{self.out} already holds a run; pass overwrite=True to replace it (the old "
                                         "run stays in place until the new one is complete)"])
        if holds_run and not is_run_folder(self.out):
            raise InputError(self.name, [f"{self.out} is not a choicegrad run folder (no valid {MANIFEST}): "
                                         "overwrite=True replaces only a run, so nothing in it was touched; "
                                         "choose another folder"])
        foreign = foreign_files(self.out, self.files) if holds_run else []
        if foreign:
            raise InputError(self.name, [f"{self.out} holds files choicegrad did not write there: "
                                         f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}; overwrite=True "
                                         "replaces only a run, so move them out first (nothing was touched)"])
        if holds_run and os.path.ismount(self.out):
            raise InputError(self.name, [f"{self.out} is a mount point, which cannot be replaced"])
        if self.resume:
            self.notes.append(f"nothing to resume for {self.out}: starting from the beginning")
        try:
            fs.mkdir(self.dir)
            self._created = True
            atomic_write_text(self.dir / REQUEST, json.dumps(self.request, indent=2) + "\n")
        except OSError as exc:
            raise InputError(self.name, [f"cannot write {self.dir}: {os_reason(exc)}"]) from None

    def _check_request(self, path: Path) -> None:
        try:
            old = read_json(path)
        except InputError as exc:
            raise InputError(str(path), [f"unreadable ({'; '.join(exc.problems)}); start over with overwrite=True"]) from None
        old = old.get("request", old) if isinstance(old, dict) and path.name == MANIFEST else old
        diff = _differences(old if isinstance(old, dict) else {}, self.request, self.added_settings)
        if diff:
            raise InputError(self.name, [f"the run in {path.parent} was started with other settings; resume it with "
                                         "the same ones, or start over with overwrite=True"] + diff)

    def commit(self) -> None:
        """Seal the run (run.json with every file's sha256, flushed), then drop its resume state and
        move it into place."""
        for stale in self.dir.glob(".*.tmp"):          # temporary files of writes a kill cut short
            fs.unlink(stale)
        previous = _manifest(self.out) if self.out.is_dir() else None
        files = {p.name: sha256_file(p) for p in sorted(self.dir.iterdir())
                 if p.is_file() and not p.name.startswith(".") and p.name != REQUEST}
        manifest = {"run_id": uuid.uuid4().hex[:12], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "request": self.request, "files": files,
                    "replaces": previous.get("run_id") if previous is not None else None}
        atomic_write_text(self.dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        self._move_into_place(manifest)
        self.committed = True

    def _move_into_place(self, manifest: dict) -> None:
        """Move the sealed partial to `out`: one rename, or one exchange with the run it replaces
        (two renames where the file system cannot exchange, or the old run has no run.json)."""
        fs.rmtree(self.dir / CHECKPOINT_DIR)
        fs.unlink(self.dir / REQUEST)
        current = _manifest(self.out) if self.out.is_dir() else None
        if current is not None and manifest.get("run_id") and current.get("replaces") == manifest["run_id"]:
            _discard(self.dir, self.out)               # the exchange happened: the partial holds the old run
            return
        if not self.out.exists():
            fs.replace(self.dir, self.out)
            return
        if not any(self.out.iterdir()):
            fs.rmtree(self.out)
            fs.replace(self.dir, self.out)
            return
        if not is_run_folder(self.out):
            raise InputError(self.name, [f"{self.out} now holds files that are not a choicegrad run, so it is not "
                                         f"replaced; the finished run waits in {self.dir}: move those files away, "
                                         "then run the command again to move it into place"])
        if current is not None and fs.exchange(self.dir, self.out):
            _discard(self.dir, self.out)               # now the replaced run
            return
        old = _sibling(self.out, f"old-{uuid.uuid4().hex[:12]}")
        fs.replace(self.out, old)
        fs.replace(self.dir, self.out)
        fs.rmtree(old)

    @staticmethod
    def recover(out: str | Path, files: FolderFiles = FITTED_RUN_FILES) -> None:
        """For readers: finish a move into place that a kill cut short (a sealed partial or a replaced
        run beside `out`, holding `files`), when no writer holds the folder; otherwise leave everything
        as it is."""
        out = Path(out)
        if out.name in ("", ".", "..") or out.is_symlink() or (out.is_dir() and not (
                _sibling(out, "partial") / MANIFEST).is_file()) or not (
                (_sibling(out, "partial") / MANIFEST).is_file() or _old_folders(out)):
            return
        writer = RunWriter(out, {}, files=files)
        try:
            writer.lock.acquire()
        except InputError:
            return
        try:
            writer._recover(remove_old=False)          # a reader only finishes moves; it removes nothing
        except (InputError, OSError):
            pass
        finally:
            writer.lock.release()

    def __exit__(self, exc_type, exc, tb) -> None:
        kept = False
        try:
            if exc_type is not None and not self.committed and self.dir.exists():
                kept = self._has_work()
                if not kept:
                    try:
                        _discard(self.dir, self.out)   # nothing worth resuming: leave no trace
                    except OSError:
                        pass
        finally:
            self._release()
        if isinstance(exc, OSError):                   # disk full, a read-only file system, ...: say what is safe
            problem = os_error(exc)
            notes = [f"{self.out} is as it was"] if self.out.is_dir() and any(self.out.iterdir()) else []
            if kept and self.resumable:
                notes.append(f"the work so far is kept in {self.dir}: once this is fixed, run the same again with "
                             "resume=True to continue it")
            raise InputError(problem.source, problem.problems + notes) from exc

    def _has_work(self) -> bool:
        return any(p.name != REQUEST and not p.name.endswith(".tmp") for p in self.dir.iterdir())


def _written_with_manifest(path: Path) -> bool:
    """Whether the scorer in `path` was saved by a version that seals runs (its JSON records the
    weights' sha256): such a folder without run.json lost it."""
    try:
        doc = read_json(path / "scorer.json") if (path / "scorer.json").is_file() else None
    except InputError:
        return False
    return isinstance(doc, dict) and "weights_sha256" in doc


def _verifies(folder: Path, files: FolderFiles = FITTED_RUN_FILES) -> bool:
    try:
        _check_files(folder, files)
    except InputError:
        return False
    return True


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


def verify_run(path: str | Path, files: FolderFiles = FITTED_RUN_FILES) -> Optional[dict[str, Any]]:
    """Check RUN against its run.json: every model file listed (files.verified) present with its
    sha256, no other weights file beside them. Returns the manifest (None for a folder written before
    manifests existed); InputError naming the first file that does not belong. First finishes a move
    into place that a kill cut short (RunWriter.recover), so a reader never finds the run missing in
    that window."""
    RunWriter.recover(path, files)
    return _check_files(Path(path), files)


def _check_files(path: Path, files: FolderFiles = FITTED_RUN_FILES) -> Optional[dict[str, Any]]:
    manifest_path = path / MANIFEST
    if os.path.lexists(manifest_path) and not manifest_path.is_file():
        raise InputError(str(manifest_path), ["not a regular file (a pipe, device, socket or folder); refused"])
    if not manifest_path.is_file():
        if _written_with_manifest(path):
            raise InputError(str(path), [f"{MANIFEST} is missing, though the run was written with one: its files "
                                         "cannot be checked to belong together (files of different runs, or changed "
                                         "files); fit it again"])
        return None
    try:
        manifest = read_json(manifest_path)
        listed = dict(manifest["files"])
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in listed.items()):
            raise TypeError("files: expected names and sha256 strings")
    except InputError as exc:
        raise InputError(str(manifest_path), [f"unreadable run manifest ({'; '.join(exc.problems)})"]) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(str(manifest_path), [f"unreadable run manifest ({exc})"]) from None
    run_id = manifest.get("run_id", "?")
    problems = [f"run.json lists {n!r}, which is not a file name in the folder" for n in listed
                if not n or n in (".", "..") or "/" in n or os.sep in n or "\0" in n]
    if problems:
        raise InputError(str(manifest_path), problems[:5])
    for name, digest in listed.items():
        if not name.startswith(files.verified):
            continue
        f = path / name
        if os.path.lexists(f) and (f.is_symlink() or not f.is_file()):
            problems.append(f"{f} is not a regular file (a link, pipe, device or folder); refused")
        elif not f.is_file():
            problems.append(f"{f} is missing (listed in run.json of run {run_id})")
        elif sha256_file(f) != digest:
            problems.append(f"{f} does not belong to run {run_id}: its sha256 differs from run.json "
                            "(files of different runs mixed, or a changed file)")
    extra = [p.name for p in path.iterdir() if p.suffix in (".safetensors",) and p.name not in listed]
    problems += [f"{path / n} is not part of run {run_id}" for n in sorted(extra)]
    if problems:
        raise InputError(str(path), problems)
    return manifest


T = TypeVar("T")


@contextmanager
def pinned(path: str | Path) -> Iterator[Path]:
    """Folder `path` held open while inside: a path (through /proc/self/fd, on Linux) that keeps naming
    the same folder even when a writer swaps another run into its place meanwhile; elsewhere `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield Path(path)
        return
    try:
        via = Path(f"/proc/self/fd/{fd}")
        yield via if via.is_dir() else Path(path)
    finally:
        os.close(fd)


def read_run(path: str | Path, load: Callable[[Path], T], attempts: int = 3,
             files: FolderFiles = FITTED_RUN_FILES) -> T:
    """load(folder) on run folder `path` after verify_run, both on one and the same folder (pinned):
    a writer that replaces the run meanwhile never gives a mix of two runs. When reading fails because
    the run was replaced while it was read, the new run is read instead (up to `attempts` times).
    Messages name `path`, not the pinned path."""
    path = Path(path)
    RunWriter.recover(path, files)
    for attempt in range(attempts):
        with pinned(path) as folder:
            seen = _manifest(folder)
            try:
                _check_files(folder, files)
                return load(folder)
            except InputError as exc:
                if folder != path:
                    exc = InputError(exc.source.replace(str(folder), str(path)),
                                     [p.replace(str(folder), str(path)) for p in exc.problems])
                current = _manifest(path) if path.is_dir() else None
                replaced = seen is not None and current is not None and current.get("run_id") != seen.get("run_id")
                if replaced and attempt + 1 < attempts:
                    continue
                raise exc from None
    raise AssertionError("unreachable")
