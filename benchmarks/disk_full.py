"""A real full disk, not an injected one: each command writes onto a small tmpfs filled to leave a
little free space, then the space is freed and the next command a user would run is run.

    sudo python benchmarks/disk_full.py            # needs root (mount -t tmpfs); prints a markdown table

For each command and amount left free it records the exit code, whether the message names a path
and ENOSPC, whether a traceback appeared, whether what was there before is intact (the previous run,
state or output, by sha256), and whether the next command (the same one, with --resume for fits)
then succeeds. docs/reliability.md quotes its table. The in-suite check is tests/test_fault_injection.py,
which fails every disk operation in turn.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

F = ["--features", "s?", "--score", "y", "--context", "ctx"]
FIT = ["fit", "t.csv", *F, "--scorer-epochs", "2", "--steps", "20"]


def sh(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "choicegrad", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def fill(mnt: Path, free_kib: int) -> None:
    (mnt / "filler").unlink(missing_ok=True)
    st = os.statvfs(mnt)
    avail = st.f_bavail * st.f_frsize
    size = max(0, avail - free_kib * 1024)
    with open(mnt / "filler", "wb") as fh:
        while size > 0:
            block = min(size, 1 << 20)
            fh.write(b"\0" * block)
            size -= block


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--free", default="0,16,256,3072", help="KiB left free, comma-separated")
    ap.add_argument("--size-mib", type=int, default=24)
    args = ap.parse_args()
    free_levels = [int(x) for x in args.free.split(",")]
    work = Path(tempfile.mkdtemp(prefix="choicegrad-disk-full-"))
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size_mib}m", "tmpfs", str(mnt)], check=True)
    try:
        from choicegrad.bench.tasks import PottsTask

        PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=300, seed=1).to_csv(work / "t.csv", index=False)
        shutil.copy(work / "t.csv", mnt / "t.csv")
        # command -> (set-up commands, its arguments, the output it writes or replaces, the next command)
        plan = {
            "fit (first)": ([], FIT + ["--out", "run"], "run", FIT + ["--out", "run", "--resume"]),
            "fit --overwrite": ([FIT + ["--out", "run"]], FIT + ["--seed", "2", "--out", "run", "--overwrite"], "run",
                                FIT + ["--seed", "2", "--out", "run", "--overwrite", "--resume"]),
            "fit-scorer": ([], ["fit-scorer", "t.csv", *F, "--epochs", "2", "--out", "sc"], "sc",
                           ["fit-scorer", "t.csv", *F, "--epochs", "2", "--out", "sc", "--resume"]),
            "generate": ([FIT + ["--out", "run"], ["generate", "run", "--top-k", "3", "--out", "c.csv"]],
                         ["generate", "run", "--top-k", "50", "--out", "c.csv"], "c.csv", None),
            "score": ([FIT + ["--out", "run"], ["score", "run", "t.csv", "--out", "s.csv"]],
                      ["score", "run", "t.csv", "--out", "s.csv"], "s.csv", None),
            "propose --state": ([["propose", "t.csv", *F, "--batch", "4", "--max-minutes", "0.05", "--state", "state",
                                  "--out", "p.csv"]],
                                ["propose", "t.csv", *F, "--batch", "4", "--max-minutes", "0.05", "--state", "state",
                                 "--out", "p.csv"], "state", None),
        }
        rows = []
        for name, (setup, cmd, output, after) in plan.items():
            for free in free_levels:
                for p in mnt.iterdir():
                    if p.name != "t.csv":
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
                for s in setup:
                    done = sh(s, mnt)
                    assert done.returncode == 0, done.stderr
                before = tree_digest(mnt / output)
                fill(mnt, free)
                done = sh(cmd, mnt)
                named = "(ENOSPC)" in done.stderr and (f".{output}." in done.stderr or f"{output}" in done.stderr)
                after_digest = tree_digest(mnt / output)
                if done.returncode == 0:
                    intact = "new, complete"
                else:
                    intact = ("absent" if not (mnt / output).exists() else "as before" if after_digest == before
                              else "CHANGED")
                (mnt / "filler").unlink()
                again = sh(after or cmd, mnt)
                rows.append((name, free, done.returncode, named, "Traceback" in done.stderr, intact, again.returncode))
        print("| command | KiB free | exit | names path + ENOSPC | traceback | output after | next command exit |")
        print("|---|---:|---:|---|---|---|---:|")
        for name, free, rc, named, tb, intact, again in rows:
            print(f"| {name} | {free:,} | {rc} | {'yes' if named else ('-' if rc == 0 else 'NO')} | "
                  f"{'YES' if tb else 'no'} | {intact} | {again} |")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
