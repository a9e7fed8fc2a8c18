"""The whole compute core against the integer golden model, bit for bit."""

import dataclasses

import numpy as np
import pytest
import torch

from stepvit.model.export import load_export
from stepvit.model.export.writer import write_export
from stepvit.model.golden import GoldenModel
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.core_plan import CoreGeometry
from stepvit.rtl.core_sim import simulate_core

TINY = dict(image_shape=[1, 4, 4], patch=2, dim=8, heads=2, depth=1, mlp_dim=16,
            num_classes=3, t_max=3)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, random_export):
    return load_export(random_export(tmp_path_factory.mktemp("tiny"), seed=1, **TINY))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(2, 1, 4, 4), dtype=np.uint8)


def mismatches(runs, golden):
    """Return one line per value where the core and the golden model differ."""
    lines = []
    totals = golden.layer_spike_totals()
    for index, run in enumerate(runs):
        expected = {"logits": golden.logits[index].tolist(),
                    "predicted": int(golden.predicted[index]),
                    "spike_counts": totals[index].tolist()}
        for name, value in expected.items():
            if getattr(run, name) != value:
                lines.append(f"image {index} {name}: core {getattr(run, name)}, golden {value}")
    return lines


def check(export, images, masks, lanes, core=None):
    golden = GoldenModel(export).run(images, masks=masks)
    runs = simulate_core(export, images, masks, lanes=lanes, core=core)
    return runs, golden


@pytest.mark.parametrize("lanes", [1, 2, 4])
@pytest.mark.parametrize("budget", [1, 2, None])
def test_core_matches_golden(tiny_export, images, lanes, budget):
    masks = tiny_export.budget_mask(budget)
    runs, golden = check(tiny_export, images, masks, lanes)
    assert mismatches(runs, golden) == []


@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_core_matches_golden_with_each_reset_and_leak(tmp_path, images, reset, random_export):
    export = load_export(random_export(tmp_path, seed=5, reset=reset, leak_shift=2, **TINY))
    runs, golden = check(export, images, export.budget_mask(None), 2)
    assert mismatches(runs, golden) == []


def test_core_matches_golden_when_the_embedding_is_masked(tiny_export, images):
    # Steps with no embedding spikes start the stream at zero; a masked attention leaves it.
    masks = np.array([[0, 1, 0], [1, 0, 1], [1, 1, 0], [1, 0, 1]], dtype=np.uint8)
    runs, golden = check(tiny_export, images, masks, 2)
    assert mismatches(runs, golden) == []


def test_core_with_two_blocks_and_wide_patches_matches_golden(tmp_path, random_export):
    export = load_export(random_export(
        tmp_path, seed=2, image_shape=[3, 4, 4], patch=2, dim=8, heads=1, depth=2,
        mlp_dim=8, num_classes=5, t_max=2))
    pictures = np.random.default_rng(3).integers(0, 256, size=(1, 3, 4, 4), dtype=np.uint8)
    runs, golden = check(export, pictures, export.budget_mask(None), 4)
    assert mismatches(runs, golden) == []


def test_a_corrupted_weight_is_seen(tiny_export, images):
    """Flip the sign bit of one embedding weight in the core's memory: the check must fail."""
    masks = tiny_export.budget_mask(None)
    weights = {key: value.copy() for key, value in tiny_export.arrays.items()}
    weights["embed.weight"][0, 0] = np.int8(weights["embed.weight"][0, 0] ^ -128)
    corrupted_export = dataclasses.replace(tiny_export, arrays=weights)
    corrupted_golden = GoldenModel(corrupted_export).run(images, masks=masks)
    golden = GoldenModel(tiny_export).run(images, masks=masks)
    changed = (not torch.equal(corrupted_golden.logits, golden.logits)
               or not torch.equal(corrupted_golden.layer_spike_totals(),
                                  golden.layer_spike_totals()))
    assert changed, "the corruption must change the golden results"

    core = StepvitCore(tiny_export, lanes=2)
    core.plan.weight_words[0] ^= 0x80  # lane 0 of word 0: embed.weight[0, 0]
    runs = simulate_core(tiny_export, images, masks, lanes=2, core=core)
    assert mismatches(runs, golden) != []
    assert mismatches(runs, corrupted_golden) == []


def test_masked_steps_cost_no_cycles(tiny_export, images):
    full = simulate_core(tiny_export, images[:1], tiny_export.budget_mask(None), lanes=2)
    capped = simulate_core(tiny_export, images[:1], tiny_export.budget_mask(1), lanes=2)
    assert capped[0].cycles < full[0].cycles


@pytest.mark.parametrize("lanes", [3, 6, 16])
def test_core_matches_golden_with_ragged_chunks(tiny_export, images, lanes):
    """3 lanes cross the heads (width 4); 6 leave a ragged chunk of dim 8 and span two
    heads; 16 are the whole MLP row (dim in one ragged chunk)."""
    for budget in (None, 1):
        runs, golden = check(tiny_export, images, tiny_export.budget_mask(budget), lanes)
        assert mismatches(runs, golden) == [], f"lanes {lanes}, budget {budget}"


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_core_refuses_more_lanes_than_the_widest_row(tiny_export):
    message = r"^lanes \(17\) must be at most the widest output row \(16\)$"
    with pytest.raises(ValueError, match=message):
        CoreGeometry.from_export(tiny_export, lanes=17)
    with pytest.raises(ValueError, match=r"^lanes must be a positive integer, not 0$"):
        StepvitCore(tiny_export, lanes=0)


def test_back_to_back_adds_to_one_kv_row_match_golden(tmp_path, images, random_export):
    """K fires channel 0 alone at every token and step, in a one-head block: each KV add
    hits the row the add before it wrote the cycle before (a KV row reads as zero only
    until its first add)."""
    shape = {**TINY, "heads": 1}
    base = load_export(random_export(tmp_path / "base", seed=3, **shape))
    arrays = {key: value.astype(np.int64) for key, value in base.arrays.items()}
    thresholds = {key: np.asarray(value) for key, value in base.manifest["thresholds"].items()}
    arrays["blocks.0.attn.k.weight"][:] = 0
    bias = np.full(TINY["dim"], -100, dtype=np.int64)
    bias[0] = int(thresholds["blocks.0.attn.k"][0])
    arrays["blocks.0.attn.k.bias"] = bias
    export = load_export(write_export(
        tmp_path / "one-row", name="one-kv-row", architecture=base.manifest["architecture"],
        t_max=base.t_max, neuron=base.manifest["neuron"],
        timestep_mask=np.ones_like(base.timestep_mask), thresholds=thresholds, arrays=arrays))
    masks = export.budget_mask(None)
    runs, golden = check(export, images, masks, lanes=4)
    k_layer = export.layer_names().index("blocks.0.attn.k")
    assert golden.layer_spike_totals()[:, k_layer].tolist() == [TINY["t_max"] * 4] * 2
    assert mismatches(runs, golden) == []
