"""The one check of a torch device argument, before any work is done on it, and the memory there is
(choicegrad.generators.check_generator_fits asks it whether a generator fits)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import torch
from pydantic import AfterValidator

from choicegrad.errors import InputError


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """`device` as a torch.device that this machine has; InputError naming `name` for an unknown
    device, CUDA or MPS that is not available, or a GPU index out of range.

        check_device("cuda:1", "device")
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(name, [f'unknown device "{device}"; expected cpu, cuda, cuda:N or mps']) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(name, [f'"{device}": CUDA is not available ({why}); use cpu'])
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(name, [f'"{device}": there {"is" if count == 1 else "are"} {count} CUDA GPU(s), '
                                    f"numbered 0..{count - 1}"])
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(name, [f'"{device}": MPS (Apple GPU) is not available on this machine; use cpu'])
    elif dev.type != "cpu":
        raise InputError(name, [f'"{device}": device type "{dev.type}" is not supported; expected cpu, cuda, cuda:N or mps'])
    return dev


def device_field(value: str) -> str:
    """The validator of `Device`: `value` unchanged, or ValueError saying why it is not usable here
    (pydantic names the field)."""
    try:
        check_device(value)
    except InputError as exc:
        raise ValueError("; ".join(exc.problems)) from None
    return value


#: A settings field holding a torch device this machine has (ScorerFit.device, GeneratorFit.device).
Device = Annotated[str, AfterValidator(device_field)]


def machine_memory(device: str | torch.device = "cpu") -> int:
    """Bytes of memory training on `device` can use: a CUDA device's own; for the CPU the machine's,
    or its container's limit (cgroup) when lower. 0 where the system does not say."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev.index or 0).total_memory)
    if dev.type != "cpu":
        return 0
    try:
        have = max(0, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        have = 0
    return _under_cgroup_limit(have)


def available_memory() -> int:
    """Bytes of CPU memory there is to take: the system's available memory, or its container's
    limit (cgroup) when lower. 0 where the system does not say."""
    have = 0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return _under_cgroup_limit(have)


def _under_cgroup_limit(have: int) -> int:
    """`have` bytes, or the container's memory limit (cgroup v2 or v1) when lower (or `have` is 0)."""
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(limit).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and (not have or int(value) < have):
            have = int(value)
    return have
