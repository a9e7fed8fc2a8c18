"""A masked step costs the core nothing: not one cycle more than a step that is not there.

README and SPEC.md section 2: a module frozen at a step does no work at all for it. Same
weights and thresholds, the same images: an export with ``T = 3`` whose every module is
masked at the same steps must take exactly the cycles of the export with only the active
steps (``T = 1`` or ``T = 2``), and compute the same results. There is no fixed per-step
overhead: the sequencer only visits active steps, so the relation is equality, not a bound.
"""

import numpy as np
import pytest

from stepvit.model.export import load_export
from stepvit.rtl.core_sim import simulate_core

SMALL = dict(image_shape=[1, 4, 4], patch=2, dim=8, heads=2, depth=2, mlp_dim=16,
             num_classes=3)
MODULES = 2 * SMALL["depth"] + 2
#: one head a cycle, and both heads side by side in the attention (parallel heads)
LANES = (2, 8)


def run_with_steps(random_export, directory, steps, lanes):
    """Simulate two images on an export whose every module has the mask row ``steps``.

    The mask is given, so the random generator draws the same weights, biases and
    thresholds whatever ``T = len(steps)`` is.
    """
    mask = np.array([steps] * MODULES, dtype=np.int64)
    export = load_export(random_export(directory, seed=4, t_max=len(steps), mask=mask,
                                       **SMALL))
    images = np.random.default_rng(5).integers(0, 256, size=(2, 1, 4, 4), dtype=np.uint8)
    return simulate_core(export, images, export.timestep_mask, lanes=lanes)


@pytest.mark.parametrize("masked", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]],
                         ids=lambda steps: "".join(map(str, steps)))
@pytest.mark.parametrize("lanes", LANES)
def test_a_masked_step_takes_exactly_the_cycles_of_an_absent_one(tmp_path, masked, lanes,
                                                                  random_export):
    """Cycles per image with ``T = 3`` and masked steps equal those of the active steps alone."""
    absent = [1] * sum(masked)
    with_masked = run_with_steps(random_export, tmp_path / "masked", masked, lanes)
    without = run_with_steps(random_export, tmp_path / "absent", absent, lanes)
    for index, (frozen, short) in enumerate(zip(with_masked, without)):
        assert frozen.cycles == short.cycles, (
            f"image {index}: {frozen.cycles} cycles with mask {masked}, {short.cycles} with "
            f"{absent}")
        assert (frozen.logits, frozen.predicted, frozen.spike_counts) == (
            short.logits, short.predicted, short.spike_counts), f"image {index}"
