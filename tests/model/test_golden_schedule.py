"""The golden model's two orders of work: step by step, and one module at a time.

A design that streams weights from DDR runs each module over all its steps before the next
(docs/ddr-dataflow.md). That order must give the golden model's result bit for bit: every
logit, every layer's spike count at every step, the work counted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stepvit.model.export import load_export
from stepvit.model.golden import GoldenModel

STEMS = [
    None,
    {"stages": [{"channels": 3}, {"channels": 4, "pool": "after"}], "rpe": True},
    {"stages": [{"channels": 2, "pool": "before"}, {"channels": 4, "stride": 2}],
     "rpe": False},
]


def same_results(first, second) -> None:
    assert torch.equal(first.logits, second.logits)
    assert torch.equal(first.predicted, second.predicted)
    assert first.spikes.keys() == second.spikes.keys()
    for name in first.spikes:
        assert torch.equal(first.spikes[name], second.spikes[name]), name
    for key in first.work:
        assert torch.equal(torch.as_tensor(first.work[key]),
                           torch.as_tensor(second.work[key])), key


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_module_by_module_gives_the_step_by_step_result(tmp_path, random_export,
                                                         index) -> None:
    stem = STEMS[index]
    shape = dict(image_shape=[1, 6, 6], patch=2, dim=4, heads=2, depth=2, mlp_dim=8,
                 num_classes=3, t_max=3, reset="soft" if index % 2 else "hard")
    if stem is not None:
        from stepvit.model.export.stem import complete_stem

        stem = complete_stem({**stem, "pool": {"kernel": 3, "stride": 2, "padding": 1}})
        shape.update(patch=1, dim=stem["stages"][-1]["channels"], stem=stem)
    export = load_export(random_export(tmp_path, seed=index, **shape))
    golden = GoldenModel(export)
    images = np.random.default_rng(index).integers(0, 256, (5, 1, 6, 6), dtype=np.uint8)
    rng = np.random.default_rng(10 + index)
    # the trained mask at every budget, and masks with whole modules silent at some steps
    masks = [None] + [rng.integers(0, 2, export.timestep_mask.shape).astype(np.uint8)
                      for _ in range(3)]
    for mask in masks:
        for budget in range(1, export.t_max + 1):
            same_results(golden.run(images, budget, mask),
                         golden.run_module_major(images, budget, mask))


def test_the_comparison_sees_one_changed_spike_count(tmp_path, random_export) -> None:
    export = load_export(random_export(tmp_path, seed=3))
    golden = GoldenModel(export)
    images = np.random.default_rng(3).integers(
        0, 256, (4, *export.arch["image_shape"]), dtype=np.uint8)
    first, second = golden.run(images), golden.run_module_major(images)
    name = next(name for name, counts in second.spikes.items() if counts.any())
    second.spikes[name][0, int(second.spikes[name][0].argmax())] += 1
    with pytest.raises(AssertionError):
        same_results(first, second)
