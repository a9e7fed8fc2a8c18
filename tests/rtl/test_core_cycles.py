"""The core's cycles against the lower bound (accumulates / lanes) on digits-shaped work."""

import pytest
from sklearn.datasets import load_digits

from stepvit.model.data import digits_to_uint8
from stepvit.model.export import load_export
from stepvit.model.golden import GoldenModel
from stepvit.rtl.core_sim import simulate_core

#: The efficiency target: measured cycles within this factor of (ac_ops + embed_ac_ops) / lanes.
MAX_CYCLES_OVER_BOUND = 1.5


@pytest.mark.slow
@pytest.mark.parametrize("budget", [None, 1])
def test_digits_shaped_core_is_within_target_of_the_lower_bound(tmp_path, budget,
                                                                random_export):
    export = load_export(random_export(
        tmp_path, image_shape=[1, 8, 8], patch=2, dim=32, heads=2, depth=2, mlp_dim=64,
        num_classes=10, t_max=4, seed=3))
    images = digits_to_uint8(load_digits().images[-1:]).reshape(-1, 1, 8, 8)
    masks = export.budget_mask(budget)
    lanes = 8
    golden = GoldenModel(export).run(images, masks=masks)
    runs = simulate_core(export, images, masks, lanes=lanes)
    totals = golden.layer_spike_totals()
    for index, run in enumerate(runs):
        assert run.logits == golden.logits[index].tolist(), f"image {index}"
        assert run.spike_counts == totals[index].tolist(), f"image {index}"
        bound = int(golden.work["ac_ops"][index] + golden.work["embed_ac_ops"][index]) / lanes
        assert run.cycles <= MAX_CYCLES_OVER_BOUND * bound, (
            f"image {index}: {run.cycles} cycles, lower bound {bound:.0f}")
