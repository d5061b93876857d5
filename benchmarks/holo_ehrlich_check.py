"""Is choicegrad's holo-ehrlich task holo-bench's own Ehrlich function? A check where botorch is installed.

    pip install -c constraints.txt botorch "numpy<2" pandas pooch && pip install --no-deps pytorch-holo
    python benchmarks/holo_ehrlich_check.py            # prints OK, or the first difference and exits 1

choicegrad.bench.tasks.holo builds the function from holo's elemental files alone (holo's own class
imports botorch, and holo pins numpy < 2). This script builds holo's `Ehrlich` class itself, for
several settings and seeds, and compares: transition matrix, motifs, spacings, the value of the
start rows, of random rows, of single-position changes of the start rows and of holo's optimal
solution. Run it in an environment that has botorch (the project's own does not need it).
"""

from __future__ import annotations

import sys

import torch

from choicegrad.bench.tasks.holo import HoloEhrlich

SETTINGS = [dict(states=32, length=32, motifs=2, motif_length=4, quantization=4),
            dict(states=20, length=16, motifs=2, motif_length=3, quantization=3),
            dict(states=8, length=12, motifs=1, motif_length=4, quantization=2)]


def main() -> int:
    from holo.test_functions.closed_form import Ehrlich

    for setting in SETTINGS:
        for seed in (0, 1, 7):
            ours = HoloEhrlich(**setting, seed=seed)
            theirs = Ehrlich(num_states=setting["states"], dim=setting["length"], num_motifs=setting["motifs"],
                             motif_length=setting["motif_length"], quantization=setting["quantization"],
                             random_seed=seed)
            name = f"{setting} seed {seed}"
            checks = {"transition matrix": torch.equal(ours.transition_matrix, theirs.transition_matrix),
                      "motifs": all(torch.equal(a, b) for a, b in zip(ours.motifs, theirs.motifs)),
                      "spacings": all(torch.equal(a, b) for a, b in zip(ours.spacings, theirs.spacings))}
            start = ours.start(256, seed=seed)
            g = torch.Generator().manual_seed(seed)
            random = torch.randint(setting["states"], (256, setting["length"]), generator=g)
            moved = start.clone()
            at = torch.randint(setting["length"], (256,), generator=g)
            moved[torch.arange(256), at] = torch.randint(setting["states"], (256,), generator=g)
            best = theirs.optimal_solution()[None]
            for label, rows in (("start rows", start), ("random rows", random), ("changed start rows", moved),
                                ("holo's optimal solution", best)):
                a = ours.oracle(torch.zeros(len(rows), dtype=torch.long), rows)
                b = theirs(rows).double()
                checks[label] = torch.equal(a, b)
            bad = [k for k, ok in checks.items() if not ok]
            if bad:
                print(f"DIFFERENT for {name}: {', '.join(bad)}")
                return 1
            feasible = float(ours.feasible(start).float().mean())
            print(f"same for {name}: start feasible {feasible:.2f}, optimum {float(ours.oracle(torch.zeros(1), best)):.2f}")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
