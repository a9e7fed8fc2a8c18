"""Parallel heads: the KV and Q·KV passes walk several heads side by side, bit for bit.

With ``lanes >= 2 * head_dim`` (whole heads in the lanes), walker ``j`` of a chunk walks
head ``chunk * parallel_heads + j`` with its own KV memory and adds into that head's
lanes only. These exports make the heads' spikes as unequal as possible, so that a walker
that adds when it has no bit, reads another head's KV memory, lands in another head's
lanes, or misses the forwarding of its own memory's add changes the logits.
"""

import numpy as np
import pytest

from stepvit.model.export import load_export
from stepvit.model.export.writer import write_export
from stepvit.model.golden import GoldenModel
from stepvit.rtl.core_plan import CoreGeometry
from stepvit.rtl.core_sim import simulate_core

HEAD_DIM = 4
SHAPE = dict(image_shape=[1, 4, 4], patch=2, dim=4 * HEAD_DIM, heads=4, depth=1,
             mlp_dim=2 * 4 * HEAD_DIM, num_classes=3, t_max=3)
NEVER = -100  # a bias far below every threshold: the channel never fires


def export_with_fixed_spikes(random_export, directory, base_seed, firing, attn_shift=None):
    """Return a random export whose Q and K (and V) channels fire by ``firing`` alone.

    ``firing[name]`` is the set of channels of ``blocks.0.attn.<name>`` that fire at every
    token and step (their weights are zero and their bias is their threshold); the others
    never fire. The rest of the network stays random; ``attn_shift`` sets the attention's
    threshold (``2**attn_shift``), high enough for a KV count one short to show.
    """
    base = load_export(random_export(directory / "base", seed=base_seed,
                                     attn_shift=attn_shift, **SHAPE))
    arrays = {key: value.astype(np.int64) for key, value in base.arrays.items()}
    thresholds = {key: np.asarray(value) for key, value in base.manifest["thresholds"].items()}
    for name, channels in firing.items():
        layer = f"blocks.0.attn.{name}"
        arrays[f"{layer}.weight"][:] = 0
        bias = np.full(SHAPE["dim"], NEVER, dtype=np.int64)
        for channel in channels:
            bias[channel] = int(thresholds[layer][channel])
        arrays[f"{layer}.bias"] = bias
    return load_export(write_export(
        directory / "fixed", name="fixed-spikes", architecture=base.manifest["architecture"],
        t_max=base.t_max, neuron=base.manifest["neuron"],
        timestep_mask=np.ones_like(base.timestep_mask), thresholds=thresholds, arrays=arrays))


def random_images():
    return np.random.default_rng(0).integers(0, 256, size=(2, 1, 4, 4), dtype=np.uint8)


def mismatches(export, lanes, budget):
    """Return the images (and what differs) where the core and the golden model disagree."""
    images = random_images()
    masks = export.budget_mask(budget)
    golden = GoldenModel(export).run(images, masks=masks)
    totals = golden.layer_spike_totals()
    lines = []
    for index, run in enumerate(simulate_core(export, images, masks, lanes=lanes)):
        if run.logits != golden.logits[index].tolist():
            lines.append(f"image {index} logits: core {run.logits}, "
                         f"golden {golden.logits[index].tolist()}")
        if run.spike_counts != totals[index].tolist():
            lines.append(f"image {index} spike counts: core {run.spike_counts}, "
                         f"golden {totals[index].tolist()}")
    return lines


@pytest.mark.parametrize("lanes", [2 * HEAD_DIM, 4 * HEAD_DIM])
def test_unbalanced_heads_match_golden(tmp_path, lanes, random_export):
    """Head 0 fires no K or Q channel, head 1 all, head 2 every K and V but no Q, head 3
    two K and three Q: walker 0 is empty while another walks four bits, walkers end
    apart, and head 2's attention is zero while its KV rows are not (a walker that adds
    without a bit of its own makes it fire)."""
    export = export_with_fixed_spikes(random_export, tmp_path, 11, {
        "k": {4, 5, 6, 7, 8, 9, 10, 11, 13, 15}, "q": {4, 5, 6, 7, 12, 13, 15},
        "v": {8, 9, 10, 11, 12, 14}}, attn_shift=1)
    assert CoreGeometry.from_export(export, lanes=lanes).parallel_heads == lanes // HEAD_DIM
    for budget in (None, 1):
        assert mismatches(export, lanes, budget) == [], f"lanes {lanes}, budget {budget}"


@pytest.mark.parametrize("lanes", [2 * HEAD_DIM, 4 * HEAD_DIM])
def test_each_walker_adds_into_its_own_heads_lanes(tmp_path, lanes, random_export):
    """Q fires in head 1 alone, K everywhere: the attention of heads 0, 2 and 3 is zero,
    so a KV row added into another head's lanes fires channels that must stay silent."""
    export = export_with_fixed_spikes(random_export, tmp_path, 15, {
        "k": set(range(SHAPE["dim"])), "q": {4, 5, 6, 7}})
    golden = GoldenModel(export).run(random_images())
    attention = export.layer_names().index("blocks.0.attn.attn")
    # head 1's channels fire at some tokens and steps, not at all (4 tokens, 3 steps)
    assert 0 < golden.layer_spike_totals()[0, attention] < SHAPE["t_max"] * 4 * HEAD_DIM
    assert mismatches(export, lanes, None) == [], f"lanes {lanes}"


@pytest.mark.parametrize("lanes", [2 * HEAD_DIM, 4 * HEAD_DIM])
def test_back_to_back_adds_in_each_kv_memory_match_golden(tmp_path, lanes, random_export):
    """K fires one channel of head 0 (its row 2) and one of head 1 (its row 1) at every
    token: each walker adds to the row its own previous add wrote the cycle before (at 16
    lanes; at 8 a cycle apart), in its own memory, while the other walker adds to another
    row of its memory. V fires in both heads at every token, so each row counts the tokens,
    and the threshold (4, the tokens) fires on the whole count, not on one short."""
    export = export_with_fixed_spikes(random_export, tmp_path, 13, {
        "k": {2, HEAD_DIM + 1}, "q": set(range(SHAPE["dim"])),
        "v": set(range(2 * HEAD_DIM))}, attn_shift=2)
    assert mismatches(export, lanes, None) == [], f"lanes {lanes}"


def test_parallel_heads_only_for_whole_heads_in_the_lanes(tmp_path, random_export):
    """Two or more whole heads in the lanes; one head, ragged heads or one lane row of
    them keep the one-head walk."""
    export = load_export(random_export(tmp_path, seed=1, **SHAPE))
    groups = {lanes: CoreGeometry.from_export(export, lanes=lanes).parallel_heads
              for lanes in (1, 4, 6, 7, 8, 9, 12, 16, 20, 32)}
    assert groups == {1: 1, 4: 1, 6: 1, 7: 1, 8: 2, 9: 1, 12: 3, 16: 4, 20: 4, 32: 4}
    assert CoreGeometry.from_export(export, lanes=12).kv_chunks == 2


def test_parallel_heads_save_the_cycles_of_the_other_heads(tmp_path, monkeypatch,
                                                           random_export):
    """Every K and Q bit set, 16 lanes: a KV or Q·KV event of the four heads takes one
    cycle, where one head at a time takes four; nothing else changes."""
    export = export_with_fixed_spikes(random_export, tmp_path, 14, {
        "k": set(range(SHAPE["dim"])), "q": set(range(SHAPE["dim"]))})
    images = np.zeros((1, 1, 4, 4), dtype=np.uint8)
    masks = export.budget_mask(None)
    golden = GoldenModel(export).run(images, masks=masks)
    parallel = simulate_core(export, images, masks, lanes=4 * HEAD_DIM)[0]
    monkeypatch.setattr(CoreGeometry, "parallel_heads", property(lambda self: 1))
    one_head = simulate_core(export, images, masks, lanes=4 * HEAD_DIM)[0]
    assert parallel.logits == one_head.logits == golden.logits[0].tolist()
    steps_tokens = SHAPE["t_max"] * 4  # 4 patches a step
    # per token: KV 16 events become 4, Q·KV 16 (the chunk's heads one by one) become 4
    assert one_head.cycles - parallel.cycles == steps_tokens * 2 * (16 - 4)
