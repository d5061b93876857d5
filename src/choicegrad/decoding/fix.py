"""Fixed slots by name: {'feature': 'category'} (or 'feature=category' strings) -> the `fixed` tensor
decode takes ((S,) long, -1 = free; see decoding.rows.check_fixed).

    fixed = parse_fix({"s0": "a"}, space)            # tensor([0, -1, -1])
    cands = decode("polish", gen, objective, ctx, k=10, fixed=fixed)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Optional, Union

import torch

from choicegrad.data import ChoiceSpace
from choicegrad.errors import InputError, did_you_mean

#: What `fix` may be: {feature: category}, 'feature=category' strings (several per string, comma
#: separated: what the CLI's --fix gives), a (S,) long tensor already in category indices, or None.
Fix = Union[Mapping[str, str], Iterable[str], torch.Tensor, None]


def _hint(value: str, options: list[str]) -> str:
    """' (did you mean "x"?)': a case-insensitive match first, else the closest spelling."""
    same = [o for o in options if o.lower() == value.lower()]
    return f' (did you mean "{same[0]}"?)' if same else did_you_mean(value, options)


def _items(fix: Mapping[str, str] | Iterable[str]) -> list[tuple[str, str, str, str]]:
    """(as given, feature, '=' or '', category) per item of `fix`."""
    if isinstance(fix, Mapping):
        return [(f"{name}={label}", str(name), "=", str(label)) for name, label in fix.items()]
    parts = [p for item in ([fix] if isinstance(fix, str) else fix) for p in item.split(",") if p.strip()]
    return [(p, *(t.strip() for t in p.partition("="))) for p in parts]


def parse_fix(fix: Fix, space: ChoiceSpace) -> Optional[torch.Tensor]:
    """{'s0': 'A'} or ['s0=A', 's2=C,s3=G'] -> (S,) long, -1 = free (None when nothing is fixed; a
    tensor is returned as it is, for decode to check); InputError('fix') listing every bad item."""
    if isinstance(fix, torch.Tensor):
        return fix.long()
    if not fix:
        return None
    items = _items(fix)
    fixed = torch.full((space.num_slots,), -1, dtype=torch.long)
    labels: dict[str, list[str]] = {}
    for _, name, eq, label in items:
        if eq and name and label:
            labels.setdefault(name, []).append(label)
    clash = {name: values for name, values in labels.items() if len(set(values)) > 1}
    problems = [f'feature "{name}" fixed {"twice" if len(v) == 2 else f"{len(v)} times"} ({", ".join(v)}); '
                "give one category" for name, v in clash.items()]
    for part, name, eq, label in items:
        if name in clash:
            continue
        if not eq or not name or not label:
            problems.append(f'"{part}": expected FEATURE=CATEGORY')
        elif name not in space.names:
            problems.append(f'unknown feature "{name}"{_hint(name, space.names)}; '
                            f'features: {", ".join(space.names[:12])}')
        else:
            cats = space.slots[space.names.index(name)].categories
            if label not in cats:
                problems.append(f'feature "{name}" has no category "{label}"{_hint(label, cats)}')
            else:
                fixed[space.names.index(name)] = space.index_of(name, label)
    if problems:
        raise InputError("fix", problems)
    return fixed
