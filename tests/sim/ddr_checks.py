"""A check the ddr simulations share: a ddr design computes in its rom design's cycles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepvit.model.export import Export
from stepvit.rtl.design_image import design_image
from stepvit.sim.runner import Simulation, golden_packets


def assert_bit_exact_in_rom_cycles(ddr_simulation: Simulation, export: Export,
                                   images: np.ndarray, budget: int | None, lanes: int,
                                   rom_dir: Path) -> None:
    """Run ``images`` on the ddr design and on ``export``'s rom design at ``budget``.

    The ddr run loads the whole image (every beat) and matches the golden model bit for
    bit (the bench checks each packet); each image's cycle word equals the rom design's.
    """
    mask_rows = export.budget_mask(budget)
    results = ddr_simulation.run("ddr_weights",
                                 ddr_simulation.ddr_config(export, images, mask_rows))
    assert not results["failures"]
    assert len(results["packets"]) == len(images)
    image = design_image(export, lanes=lanes)
    assert results["beats"] == len(image.image) // (image.data_width // 8)
    rom = Simulation(export, rom_dir, lanes=lanes)
    expected = golden_packets(export, images, mask_rows)
    rom_results = rom.run("stream_images",
                          rom.config(images, expected=expected, mask_rows=mask_rows))
    cycle_word = export.arch["num_classes"] + 1
    assert ([packet["words"][cycle_word] for packet in results["packets"]]
            == [packet["words"][cycle_word] for packet in rom_results["packets"]])
