"""A ddr design built with a width margin runs a wider export of its shape, under Icarus.

The tiny network on 4x4 images: seed 1 (membrane 18, logit 12) builds the design with
``--width-margin 1``; seed 4 (membrane 19, logit 13, its other widths equal) loads its
image, packed at the design's widths, and computes its golden model's outputs bit for
bit, each image in the cycles of seed 4's own rom design.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepvit.model.export import design_widths, load_export, widths_fit
from stepvit.model.export.errors import StepvitError
from stepvit.rtl.design_image import design_image
from stepvit.sim.runner import Simulation, golden_packets

SHAPE = (1, 4, 4)
NARROW, WIDE = 1, 4
LANES = 4
IMAGES = 2


@pytest.mark.slow
def test_a_margin_of_one_runs_the_wider_export_bit_exact_in_its_rom_cycles(
        tmp_path: Path, random_export) -> None:
    narrow, wide = (load_export(random_export(tmp_path / f"seed{seed}", image_shape=SHAPE,
                                              seed=seed)) for seed in (NARROW, WIDE))
    widths = design_widths(narrow.bit_widths, 1)
    assert widths_fit(wide.bit_widths, narrow.bit_widths) and not widths_fit(wide.bit_widths,
                                                                             widths)
    images = np.random.default_rng(1).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)
    ddr = Simulation(narrow, tmp_path / "ddr", lanes=LANES, weights="ddr", widths=widths)
    mask_rows = wide.budget_mask(None)
    results = ddr.run("ddr_weights", ddr.ddr_config(wide, images, mask_rows))
    assert not results["failures"]
    assert len(results["packets"]) == IMAGES
    assert results["checksum"] == design_image(wide, lanes=LANES, widths=widths).checksum
    rom = Simulation(wide, tmp_path / "rom", lanes=LANES)
    expected = golden_packets(wide, images, mask_rows)
    rom_results = rom.run("stream_images", rom.config(images, expected=expected,
                                                      mask_rows=mask_rows))
    cycle_word = wide.arch["num_classes"] + 1
    ddr_cycles = [packet["words"][cycle_word] for packet in results["packets"]]
    assert ddr_cycles == [packet["words"][cycle_word] for packet in rom_results["packets"]]
    print(f"widths {widths}; seed {WIDE} per-image cycles {ddr_cycles}")


@pytest.mark.slow
def test_a_design_without_margin_refuses_the_wider_export(tmp_path: Path,
                                                          random_export) -> None:
    narrow, wide = (load_export(random_export(tmp_path / f"seed{seed}", image_shape=SHAPE,
                                              seed=seed)) for seed in (NARROW, WIDE))
    ddr = Simulation(narrow, tmp_path / "ddr", lanes=LANES, weights="ddr")
    images = np.zeros((1, *SHAPE), dtype=np.uint8)
    with pytest.raises(StepvitError, match="membrane 19 > 18, logit 13 > 12"):
        ddr.ddr_config(wide, images, wide.budget_mask(None))
