"""Spike maps of words of fixed width (``spike_word_bits``) against the golden model.

A token's spikes wider than ``spike_word_bits`` are held as several words (segments), each
walked in turn for every output chunk; the attention's passes walk only the segment of a
chunk's heads. Every shape here cuts the ``dim`` words, the hidden layer's and (without a
stem) the patches; logits, class and every layer's spike count must be the golden model's.
"""

import re

import numpy as np
import pytest
from amaranth.back import rtlil, verilog
from test_core_golden import mismatches

from stepvit.model.export import load_export
from stepvit.model.golden import GoldenModel
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.core_plan import CoreGeometry, CorePlan
from stepvit.rtl.core_sim import simulate_core

#: (name, shape of the random export, lanes, spike_word_bits, tile_words)
CASES = [
    # 2 dim segments, 4 hidden, 2 patch segments; one head at a time
    ("heads one at a time", dict(image_shape=(1, 8, 8), patch=2, dim=32, heads=4, mlp_dim=64),
     8, 16, None),
    # two heads walked side by side (lanes of 8 hold two heads of 4), 2 dim segments
    ("parallel heads", dict(image_shape=(1, 8, 8), patch=2, dim=32, heads=8, mlp_dim=64),
     8, 16, None),
    # ragged last chunks (dim 20 and hidden 36 in chunks of 8), a ragged last head group
    # (5 heads of 4, two side by side), segments of one chunk
    ("ragged", dict(image_shape=(1, 4, 4), patch=2, dim=20, heads=5, mlp_dim=36), 8, 8, None),
    # weight passes split into tiles (their chunk offsets cross segments)
    ("split passes", dict(image_shape=(1, 8, 8), patch=2, dim=32, heads=4, mlp_dim=64),
     8, 16, 64),
]

STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 8, "pool": "after"}],
        "rpe": True}


def images_of(shape, seed, count=2):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    images[rng.random(images.shape) < 0.3] = 0
    return images


#: check()'s results by (config hash, lanes, words, tile words, seed): the cycle comparison
#: reuses the "heads one at a time" case's simulation (the same export and options).
_CHECKED: dict[tuple, tuple[list[str], list[int]]] = {}


def check(export, lanes, words, tile_words=None, seed=0):
    key = (export.config_hash, lanes, words, tile_words, seed)
    if key not in _CHECKED:
        _CHECKED[key] = _check(export, lanes, words, tile_words, seed)
    lines, cycles = _CHECKED[key]
    return list(lines), list(cycles)


def _check(export, lanes, words, tile_words, seed):
    core = StepvitCore(export, lanes=lanes, spike_word_bits=words, tile_words=tile_words)
    lines, cycles = [], []
    for budget in (1, None):
        images = images_of(export.arch["image_shape"], seed + (budget or 0))
        masks = export.budget_mask(budget)
        golden = GoldenModel(export).run(images, masks=masks)
        if budget is None:  # a shape whose every layer spikes: no block silent by chance
            assert (golden.layer_spike_totals() > 0).all()
        runs = simulate_core(export, images, masks, lanes=lanes, core=core)
        lines += [f"budget {budget}: {line}" for line in mismatches(runs, golden)]
        cycles += [run.cycles for run in runs]
    return lines, cycles


@pytest.mark.slow
@pytest.mark.parametrize(("name", "shape", "lanes", "words", "tile_words"), CASES,
                         ids=[case[0] for case in CASES])
def test_segmented_spike_maps_match_golden(tmp_path, random_export, name, shape, lanes, words,
                                           tile_words):
    export = load_export(random_export(tmp_path, depth=1, num_classes=5, t_max=3, seed=3,
                                       **shape))
    geometry = CorePlan(export, lanes=lanes, spike_word_bits=words).geometry
    assert geometry.dim_segments > 1 and geometry.mlp_segments > 1
    assert check(export, lanes, words, tile_words)[0] == []


@pytest.mark.slow
def test_a_segmented_stem_design_matches_golden(tmp_path, random_export):
    export = load_export(random_export(tmp_path, image_shape=(1, 7, 7), patch=1, dim=8, heads=2,
                                       depth=1, mlp_dim=16, num_classes=3, t_max=3, seed=2,
                                       stem=STEM))
    geometry = CorePlan(export, lanes=4, spike_word_bits=4).geometry
    assert (geometry.dim_segments, geometry.mlp_segments, geometry.patch_segments) == (2, 4, 0)
    assert check(export, 4, 4)[0] == []


@pytest.mark.slow
def test_words_as_wide_as_the_widest_are_the_whole_design_cycle_for_cycle(tmp_path,
                                                                          random_export):
    export = load_export(random_export(tmp_path, image_shape=(1, 8, 8), patch=2, dim=32,
                                       heads=4, depth=1, mlp_dim=64, num_classes=5, t_max=3,
                                       seed=3))
    whole, segmented = check(export, 8, None), check(export, 8, 16)
    # 64: the widest word (the hidden layer's): the very design, so cycle for cycle too
    assert verilog.convert(StepvitCore(export, lanes=8, spike_word_bits=64), name="core",
                           emit_src=False) == \
        verilog.convert(StepvitCore(export, lanes=8), name="core", emit_src=False)
    assert whole[0] == segmented[0] == []
    # each segment walked costs at least a cycle: never fewer than whole words
    assert all(s >= w for s, w in zip(segmented[1], whole[1]))


def test_the_spike_maps_are_segments_deep_and_a_word_wide(tmp_path, random_export):
    export = load_export(random_export(tmp_path, image_shape=(1, 8, 8), patch=2, dim=32,
                                       heads=4, depth=1, mlp_dim=64, num_classes=5, t_max=3))
    plan = CorePlan(export, lanes=8, spike_word_bits=16)
    g = plan.geometry
    assert (g.walker_bits, g.word_bits(g.dim_word_bits), g.word_bits(g.mlp_word_bits)) == \
        (16, 16, 16)
    assert plan.memory_bits()["spike_maps"] == g.t_max * g.tokens * (4 * 32 + 64)
    # every pass that walks all its bits walks its source's segments; the attention's one
    segments = {(p.get("source").name if p.get("source") else None, p.get("walk_mask"))
                : p["segments"] for p in plan.passes}
    assert segments[("PATCH", None)] == 2
    assert segments[("BUF0", None)] == 2
    assert segments[("HIDDEN", None)] == 4
    assert segments[("COUNTS", None)] == 2
    assert all(p["segments"] == 1 for p in plan.passes if p.get("walk_mask") is not None)


@pytest.mark.parametrize(("words", "message"), [
    (0, r"^spike_word_bits must be a positive integer, not 0$"),
    (True, r"^spike_word_bits must be a positive integer, not True$"),
    (12, r"^spike_word_bits \(12\) must be a multiple of the lanes \(8\)$"),
    (8, r"^spike_word_bits \(8\) must be a multiple of the channels of a head \(16\)$"),
])
def test_spike_word_bits_that_cannot_cut_the_words_are_refused(tmp_path, random_export, words,
                                                               message):
    export = load_export(random_export(tmp_path, image_shape=(1, 8, 8), patch=2, dim=32,
                                       heads=2, depth=1, mlp_dim=64, num_classes=5, t_max=3))
    with pytest.raises(ValueError, match=message):
        CoreGeometry.from_export(export, lanes=8, spike_word_bits=words)


def test_a_cut_patch_needs_whole_pixels(tmp_path, random_export):
    # dim 4 (one word of 4 bits at 4 lanes) but a patch of 4 pixels: 32 bit-plane bits
    export = load_export(random_export(tmp_path, image_shape=(1, 4, 4), patch=2, dim=4,
                                       heads=1, depth=1, mlp_dim=4, num_classes=3, t_max=2))
    with pytest.raises(ValueError, match=r"multiple of the 8 bit planes of a pixel \(8\)$"):
        CoreGeometry.from_export(export, lanes=4, spike_word_bits=4)
    assert CoreGeometry.from_export(export, lanes=4, spike_word_bits=8).patch_segments == 4


def test_no_shift_in_the_core_is_wider_than_its_widest_spike_word(tmp_path, random_export):
    """The spike maps' write enables are a decoder as wide as a word's chunks: a shift
    ``1 << spike_chunk`` is 2**len(spike_chunk) bits wide (65,536 at 8 lanes of
    Spikformer-4-384, whose every bit Amaranth's netlist emission walked for every input
    bit: `stepvit rtl` of the 8 + 4 design ran past 7 minutes; 60 s for its core now)."""
    export = load_export(random_export(tmp_path, image_shape=(1, 8, 8), patch=2, dim=32,
                                       heads=4, depth=1, mlp_dim=64, num_classes=5, t_max=3))
    text = rtlil.convert(StepvitCore(export, lanes=8, spike_word_bits=16, tile_words=64))
    shifts = re.findall(r"cell \$(?:shl|sshl|shift|shiftx) .*?parameter \\Y_WIDTH (\d+)", text,
                        re.S)
    assert shifts and max(int(width) for width in shifts) <= 64  # the widest word: 64 bits
