"""The pointer generator's parts: a map per pair of slots for the items chosen earlier, light set
attention over the items, and checkpoints from before the pair maps."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from choicegrad.generators import GeneratorConfig, PointerGenerator
from choicegrad.generators import load as load_generator
from choicegrad.generators import save as save_generator
from choicegrad.generators.context import ItemContext
from choicegrad.io import sha256_file

S, D = 3, 4


def make(width=None, layers=1, distinct=False, seed=0) -> PointerGenerator:
    torch.manual_seed(seed)
    config = GeneratorConfig(kind="pointer", hidden=[16, 16], heads=2, attention_layers=layers, attention_width=width)
    gen = PointerGenerator(S, D, config, [3], 0, sequential=True, distinct=distinct)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return gen.eval()


def lists(B=5, N=6, seed=1) -> ItemContext:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(N)[None, :] < torch.randint(S, N + 1, (B,), generator=g)[:, None]
    items = torch.randn(B, N, D, generator=g) * mask.unsqueeze(-1)
    return ItemContext(items, mask, cat=torch.randint(0, 3, (B, 1), generator=g))


@pytest.mark.parametrize("width,distinct", [(None, False), (4, False), (4, True)])
def test_slot_by_slot_equals_one_pass_and_later_maps_do_not_reach_back(width, distinct):
    """Decoding's per-slot logits equal the teacher pass for long and one-hot rows; slot s's logits do
    not depend on chosen[s', t] for any other slot s' (each pair of slots has its own map)."""
    gen, ctx = make(width, distinct=distinct), lists()
    B, N = ctx.mask.shape
    rows = torch.stack([torch.multinomial(ctx.mask.float(), 1).squeeze(1) for _ in range(S)], -1)[:, None]   # (B, 1, S)
    full = gen.teacher_logits(rows, ctx)
    hot = torch.nn.functional.one_hot(rows, N).float()
    with torch.no_grad():
        for x in (rows, hot):
            feats = gen.features(ctx)
            for s in range(S):
                torch.testing.assert_close(gen.slot_logits(feats, x, s)[0], full[:, :, s], rtol=1e-5, atol=1e-5)
        gen.chosen[0].normal_()                     # slot 0 sees no earlier slot: nothing changes
        gen.chosen[1, 2].normal_()                  # slot 1 never sees slot 2
        after = gen.teacher_logits(rows, ctx)
        torch.testing.assert_close(after[:, :, :2], full[:, :, :2])
        gen.chosen[2, 1].normal_()                  # slot 2 sees slot 1
        assert not torch.allclose(gen.teacher_logits(rows, ctx)[:, :, 2], full[:, :, 2])


@pytest.mark.parametrize("width,distinct", [(None, False), (4, True)])
def test_beam_of_full_width_is_the_exhaustive_top_of_log_prob(width, distinct):
    """beam_search over a sequential pointer (whose slot_logits keeps no carry) returns every allowed
    slate of each list, best first by the generator's log-probability; a narrow beam, distinct slates."""
    from choicegrad.decoding.decoders import beam_search

    gen, ctx = make(width, distinct=distinct), lists()
    B, N = ctx.mask.shape
    every = torch.cartesian_prod(*[torch.arange(N)] * S)                         # (N^S, S)
    ok = ctx.mask[:, every].all(-1)                                              # (B, N^S)
    if distinct:
        ok &= ((every[:, :, None] == every[:, None, :]).sum((-1, -2)) == S)[None, :]
    rows, lp = beam_search(gen, ctx, width=N ** S)
    ref = gen.log_prob(every.unsqueeze(0).expand(B, -1, -1), ctx).masked_fill(~ok, float("-inf"))
    for b in range(B):
        n = int(ok[b].sum())
        assert torch.isfinite(lp[b, :n]).all() and not torch.isfinite(lp[b, n:]).any()
        torch.testing.assert_close(lp[b, :n], ref[b].sort(descending=True).values[:n], atol=1e-4, rtol=1e-4)
    top, _ = beam_search(gen, ctx, width=4)
    assert all(len({tuple(r) for r in top[b].tolist()}) == 4 for b in range(B))


@pytest.mark.parametrize("width", [None, 4])
def test_padding_and_item_order_do_not_matter(width):
    """Logits over a list are the same with more padding after it and with its items permuted
    (attention over the items is masked and order-free)."""
    gen, ctx = make(width), lists()
    B, N = ctx.mask.shape
    wide = ItemContext(torch.cat([ctx.items, 5 + torch.randn(B, 3, D)], 1),
                       torch.cat([ctx.mask, torch.zeros(B, 3, dtype=torch.bool)], 1), cat=ctx.cat)
    with torch.no_grad():
        base = gen.logits(ctx)
        torch.testing.assert_close(gen.logits(wide)[..., :N], base, rtol=1e-5, atol=1e-5)
        assert (gen.logits(wide)[..., N:] < -1e8).all()
        perm = torch.randperm(N)
        shuffled = ItemContext(ctx.items[:, perm], ctx.mask[:, perm], cat=ctx.cat)
        torch.testing.assert_close(gen.logits(shuffled), base[..., perm], rtol=1e-5, atol=1e-5)


def test_checkpoint_from_before_the_pair_maps_loads_as_the_same_generator(tmp_path):
    """A sequential pointer saved when chosen held one map per chosen slot (S, H, H), added to every
    later slot's query, loads with chosen[s, t] = that map for every s: the same logits."""
    gen = make(width=None)
    with torch.no_grad():
        per_slot = torch.randn(S, 16, 16) * 0.3
        gen.chosen.copy_(per_slot.unsqueeze(0).expand(S, -1, -1, -1))
    save_generator(gen, tmp_path)
    state = load_file(tmp_path / "generator.safetensors")
    state["chosen"] = per_slot                      # the old layout, and its digest beside it
    save_file(state, tmp_path / "generator.safetensors")
    meta = json.loads((tmp_path / "generator.json").read_text())
    meta["weights_sha256"] = sha256_file(tmp_path / "generator.safetensors")
    (tmp_path / "generator.json").write_text(json.dumps(meta))
    loaded, _ = load_generator(tmp_path)
    assert loaded.chosen.shape == (S, S, 16, 16)
    ctx = lists()
    rows = torch.randint(0, 3, (len(ctx), 2, S))
    with torch.no_grad():
        torch.testing.assert_close(loaded.teacher_logits(rows, ctx), gen.teacher_logits(rows, ctx))
        assert torch.equal(loaded.greedy(ctx), gen.greedy(ctx))
