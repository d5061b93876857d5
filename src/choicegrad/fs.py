"""Every change choicegrad makes on disk, in one place, and the faults tests inject into them.

Files are written whole or not at all (`atomic_path`: a temporary name beside the target, flushed,
renamed into place); renames, new folders and removals are flushed to disk with their folder, so
that what a later step relies on is on disk before that step starts. Each operation is a *fault
point*: with CHOICEGRAD_FAULTS set (tests only) the process is killed, or the operation fails with
an OSError, at the Nth point it reaches, the way SQLite tests every I/O call in turn.

    CHOICEGRAD_FAULTS="kill@12"          SIGKILL just before the 12th operation
    CHOICEGRAD_FAULTS="enospc@12"        the 12th operation fails: OSError(ENOSPC) naming its path
    CHOICEGRAD_FAULTS="eio@12"           ... OSError(EIO)
    CHOICEGRAD_FAULTS="log=FILE"         append "N op path" per operation to FILE (to count them)

Several may be given, comma-separated ("log=/tmp/ops,enospc@3"). Unset, a point costs one
environment lookup.

Training steps are fault points too (`step`, called by Checkpointer.tick), counted per phase, so
that a test can kill a fit mid-epoch whatever it wrote before:

    CHOICEGRAD_FAILPOINTS="scorer=30,generator=5"   SIGKILL at the 30th step of the scorer's loop
                                                    (or the 5th of the generator's)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

FAULTS_ENV = "CHOICEGRAD_FAULTS"
STEP_FAULTS_ENV = "CHOICEGRAD_FAILPOINTS"
_ERRNOS = {"enospc": errno.ENOSPC, "eio": errno.EIO, "edquot": errno.EDQUOT, "erofs": errno.EROFS}


class _Faults:
    """The parsed CHOICEGRAD_FAULTS of this process and how many points it has passed."""

    def __init__(self) -> None:
        self.spec: Optional[str] = None
        self.count = 0
        self.at: dict[int, str] = {}
        self.log: Optional[str] = None

    def parse(self, spec: str) -> None:
        self.spec, self.at, self.log = spec, {}, None
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if part.startswith("log="):
                self.log = part[4:]
                continue
            kind, _, number = part.partition("@")
            if kind not in ("kill", *_ERRNOS) or not number.isdigit():
                raise ValueError(f'{FAULTS_ENV}: expected "kill@N", "enospc@N", "eio@N" or "log=FILE", got "{part}"')
            self.at[int(number)] = kind

    def point(self, op: str, path: str | os.PathLike) -> None:
        spec = os.environ.get(FAULTS_ENV, "")
        if not spec:
            return
        if spec != self.spec:
            self.parse(spec)
        self.count += 1
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(f"{self.count} {op} {path}\n")
        kind = self.at.get(self.count)
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind is not None:
            code = _ERRNOS[kind]
            raise OSError(code, os.strerror(code), str(path))


_FAULTS = _Faults()


def point(op: str, path: str | os.PathLike) -> None:
    """A fault point: operation `op` on `path` is about to happen (see the module docstring)."""
    _FAULTS.point(op, path)


class _StepFaults:
    """The parsed CHOICEGRAD_FAILPOINTS of this process and the steps each phase has taken."""

    def __init__(self) -> None:
        self.spec: Optional[str] = None
        self.at: dict[str, int] = {}
        self.seen: dict[str, int] = {}

    def step(self, phase: str) -> None:
        spec = os.environ.get(STEP_FAULTS_ENV, "")
        if not spec:
            return
        if spec != self.spec:
            self.spec, self.at = spec, {}
            for part in filter(None, (p.strip() for p in spec.split(","))):
                name, _, count = part.partition("=")
                self.at[name.strip()] = int(count or 1)
        if phase in self.at:
            self.seen[phase] = self.seen.get(phase, 0) + 1
            if self.seen[phase] >= self.at[phase]:
                os.kill(os.getpid(), signal.SIGKILL)


_STEP_FAULTS = _StepFaults()


def step(phase: str) -> None:
    """A training step of `phase` ("scorer", "warm", "generator"): a fault point for the kill tests
    (CHOICEGRAD_FAILPOINTS, see the module docstring)."""
    _STEP_FAULTS.step(phase)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where folders
    cannot be opened (some file systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:      # EINVAL: the file system does not sync folders
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read from /proc where listed (leaving it untouched); elsewhere set and put
    back at once, 0o077 meanwhile, so a file another thread makes in between is private, never open."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def mkdirs(folder: str | os.PathLike) -> None:
    """Make `folder` and the folders above it that are missing, each flushed into its parent."""
    folder = Path(folder)
    if folder.is_dir():
        return
    missing = [folder, *(p for p in folder.parents if not p.exists())]
    for f in reversed(missing):
        point("mkdir", f)
        try:
            f.mkdir()
        except FileExistsError:
            if not f.is_dir():
                raise
            continue
        fsync_dir(f.parent)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success flush it to disk, give it mode
    0o666 less the umask, rename it onto `path` and flush the folder; on any error delete it.
    Creates the folder."""
    path = Path(path)
    mkdirs(path.parent)
    _remove_stale(path)
    point("create", path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        point("write", tmp)                             # written; its flush to disk is where a full disk shows
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())               # mkstemp makes 0o600
        point("rename", path)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:              # a write() names no file: say which one it was
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _remove_stale(path: Path) -> None:
    """Remove temporary files of earlier writes of `path` whose process is gone (a kill cut them
    short); those of a live process are left to it."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob_escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            unlink(tmp)


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:           # someone else's live process
        return True
    return True


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through atomic_path; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename `src` onto `dst` (a file or an empty folder there is replaced), flushed in both folders."""
    point("rename", dst)
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)
    if Path(src).parent != Path(dst).parent:
        fsync_dir(Path(src).parent)


def mkdir(folder: str | os.PathLike) -> None:
    """Make one new folder (its parent exists), flushed into its parent; FileExistsError if present."""
    point("mkdir", folder)
    os.mkdir(folder)
    fsync_dir(Path(folder).parent)


def unlink(path: str | os.PathLike) -> None:
    """Remove a file if present."""
    if not os.path.lexists(path):
        return
    point("unlink", path)
    Path(path).unlink(missing_ok=True)


def rmtree(folder: str | os.PathLike) -> None:
    """Remove a folder and everything in it if present (a link: the link only), flushed in its parent."""
    if not os.path.lexists(folder):
        return
    point("remove", folder)
    if os.path.islink(folder) or not os.path.isdir(folder):
        os.unlink(folder)
    else:
        shutil.rmtree(folder)
    fsync_dir(Path(folder).parent)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2():
    """libc's renameat2 (glibc 2.28+, Linux 3.15+), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_EXCHANGE = _renameat2()


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (renameat2 RENAME_EXCHANGE), flushed; False where
    the system or file system cannot (the caller then renames twice)."""
    if _EXCHANGE is None:
        return False
    point("exchange", b)
    if _EXCHANGE(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            return False
        raise OSError(code, os.strerror(code), str(b))
    fsync_dir(Path(b).parent)
    return True
