"""The compute core with a convolutional stem against the integer golden model, bit for bit.

The stem engine writes the stream of every step, then the blocks and the head run as
without a stem: logits, class and every layer's spike count (the stem's included) must be
the golden model's, on the stems of the stem engine's tests and on drawn ones.
"""

import numpy as np
import pytest
from test_core_golden import mismatches
from test_stem_engine import STEMS, drawn_stem, stem_export

from stepvit.model.golden import GoldenModel
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.core_plan import CoreGeometry
from stepvit.rtl.core_sim import simulate_core
from stepvit.rtl.stem_plan import StemPlan
from stepvit.sim.stem_cycles import stem_maps

#: Drawn stems the core runs (seeds of ``drawn_stem``): 1 and 3 input channels among them.
DRAWN = (0, 2, 5)


def images_of(export, seed, count=2):
    """Return ``count`` random images of the export's shape, with many zero pixels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *export.arch["image_shape"]), dtype=np.uint8)
    images[rng.random(images.shape) < 0.3] = 0
    return images


def check_core(export, lanes, seed, stem_lanes=None):
    """Run two images at budget 1 and two with the trained mask; return the mismatches."""
    core = StepvitCore(export, lanes=lanes, stem_lanes=stem_lanes)
    lines = []
    for budget in (1, None):
        images = images_of(export, seed + (budget or 0))
        masks = export.budget_mask(budget)
        golden = GoldenModel(export).run(images, masks=masks)
        runs = simulate_core(export, images, masks, lanes=lanes, core=core)
        lines += [f"budget {budget}: {line}" for line in mismatches(runs, golden)]
    return lines


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_core_with_a_stem_matches_golden(tmp_path, index):
    export, lanes = stem_export(tmp_path, index)
    assert check_core(export, lanes, index) == []


@pytest.mark.parametrize(("lanes", "stem_lanes"), [(4, 1), (1, 3), (3, 2)])
def test_the_stem_and_the_blocks_may_have_other_lanes(tmp_path, lanes, stem_lanes):
    # stem 0 has 4 channels: token words of 4, 1 and 3 lanes from conv chunks of 1, 3, 2
    export, _ = stem_export(tmp_path, 0)
    assert check_core(export, lanes, lanes, stem_lanes) == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", DRAWN)
def test_core_with_a_drawn_stem_matches_golden(tmp_path, seed):
    export, lanes = stem_export(tmp_path, seed, drawn_stem(seed))
    assert check_core(export, lanes, seed) == []


def test_a_corrupted_stem_count_is_caught(tmp_path):
    export, lanes = stem_export(tmp_path, 0)
    images = images_of(export, 0)
    golden = GoldenModel(export).run(images, masks=export.budget_mask(None))
    runs = simulate_core(export, images, export.budget_mask(None), lanes=lanes)
    assert mismatches(runs, golden) == []
    golden.spikes["stem.0"][1, 0] += 1  # stem.0 of image 1
    lines = mismatches(runs, golden)
    assert len(lines) == 1 and lines[0].startswith("image 1 spike_counts: core ")


def test_the_stem_runs_before_the_blocks_in_the_core_cycles(tmp_path):
    export, lanes = stem_export(tmp_path, 1)
    images = images_of(export, 1)
    masks = export.budget_mask(None)
    runs = simulate_core(export, images, masks, lanes=lanes)
    plan = StemPlan.from_export(export, lanes=lanes)
    golden = GoldenModel(export)
    for image, run in zip(images, runs):
        maps, _ = stem_maps(golden, image[None], masks)
        stem_cycles = plan.image_cycles(masks[:len(plan.stages)], image, maps[0])
        assert run.cycles > stem_cycles


def test_the_core_geometry_of_a_stem_has_no_patches(tmp_path):
    export, _ = stem_export(tmp_path, 0)
    geometry = CoreGeometry.from_export(export, lanes=2)
    assert (geometry.patch_len, geometry.stem_modules) == (0, 3)
    assert geometry.first_block_module == 3 and geometry.modules == len(export.module_names)
