"""The stem engine's Verilog under Verilator (cocotb) against the golden model's stem."""

import numpy as np
import pytest
import torch

from stepvit.model.export import budget_mask_of, load_export
from stepvit.model.golden import GoldenModel
from stepvit.model.random_export import make_random_export
from stepvit.rtl.stem_plan import StemPlan
from stepvit.sim.stem_cycles import stem_maps
from stepvit.sim.stem_verilator import StemSimulation

#: An odd-sized 3-channel image, a pool before and one after, the RPE.
STEM = {"stages": [{"channels": 3, "pool": "before"}, {"channels": 5, "pool": "after"}],
        "rpe": True}


@pytest.mark.slow
def test_stem_engine_verilated_matches_golden_at_budgets_one_and_full(tmp_path):
    export = load_export(make_random_export(
        tmp_path / "export", image_shape=(3, 7, 5), patch=1, dim=5, heads=1, depth=1,
        mlp_dim=4, num_classes=3, t_max=3, seed=7, stem=STEM))
    golden = GoldenModel(export)
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(4, 3, 7, 5), dtype=np.uint8)
    masks = [budget_mask_of(export.timestep_mask, budget) for budget in (1, None, 1, None)]
    simulation = StemSimulation(export, tmp_path / "build", lanes=2)
    results = simulation.run(images, masks)
    plan = StemPlan.from_export(export, lanes=2)
    mismatches = 0
    for image, mask, result in zip(images, masks, results):
        pixels = torch.from_numpy(image[None].astype(np.int64))
        first_current, _ = golden.stem_current(pixels)
        state = golden.new_state(1)
        stream = np.stack([golden.stem_step(state, mask, first_current, step)[0].numpy()
                           for step in range(golden.t_max)])
        counts = [int(state.spikes[stage.name].sum()) for stage in golden.stem]
        mismatches += int(not np.array_equal(result["stream"], stream)
                          or result["counts"] != counts)
        maps, _ = stem_maps(golden, image[None], mask)
        assert result["cycles"] == plan.image_cycles(mask[:len(plan.stages)], image, maps[0])
    assert len(results) == len(images)
    assert mismatches == 0
