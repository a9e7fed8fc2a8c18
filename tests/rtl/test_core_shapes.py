"""The core against the golden model on many small random shapes (slow: one sim each)."""

import numpy as np
import pytest

from stepvit.model.export import load_export
from stepvit.model.golden import GoldenModel
from stepvit.rtl.core_sim import simulate_core


def random_shape(rng):
    """Return (make_random_export keywords, lanes): channels, patches, heads, widths, T and
    lanes vary."""
    patch = int(rng.choice([1, 2]))
    side = int(rng.choice([2, 4])) if patch == 2 else int(rng.choice([2, 3]))
    heads, head_dim = int(rng.integers(1, 4)), int(rng.choice([2, 3, 4]))
    mlp_dim = int(rng.integers(2, 4 * head_dim + 1))
    channels = int(rng.integers(1, 4))
    shape = dict(image_shape=[channels, side, side], patch=patch, dim=heads * head_dim,
                 heads=heads, depth=int(rng.integers(1, 3)), mlp_dim=mlp_dim,
                 num_classes=int(rng.integers(1, 12)), t_max=int(rng.integers(1, 5)),
                 reset=str(rng.choice(["hard", "soft"])), leak_shift=int(rng.integers(0, 3)))
    # Any lane count up to the widest row: ragged chunks, chunks across heads.
    lanes = int(rng.integers(1, max(shape["dim"], mlp_dim, shape["num_classes"]) + 1))
    return shape, lanes


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 212))
def test_core_matches_golden_on_a_random_shape(tmp_path, seed, random_export):
    rng = np.random.default_rng(seed)
    shape, lanes = random_shape(rng)
    export = load_export(random_export(tmp_path, seed=seed, **shape))
    images = rng.integers(0, 256, size=(2, *shape["image_shape"]), dtype=np.uint8)
    masks = export.budget_mask([None, 1, 2][seed % 3])
    golden = GoldenModel(export).run(images, masks=masks)
    totals = golden.layer_spike_totals()
    for index, run in enumerate(simulate_core(export, images, masks, lanes=lanes)):
        where = f"image {index}, {shape}, lanes {lanes}"
        assert run.logits == golden.logits[index].tolist(), where
        assert run.predicted == int(golden.predicted[index]), where
        assert run.spike_counts == totals[index].tolist(), where
