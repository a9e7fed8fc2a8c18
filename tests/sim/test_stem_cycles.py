"""The stem engine's cycle benchmark runs each budget's mask as the golden model does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepvit.model.export import load_export
from stepvit.model.golden import GoldenModel
from stepvit.sim.stem_cycles import stem_cycles

STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 4},
                   {"channels": 8, "pool": "after"}], "rpe": True}


def test_each_budget_counts_the_work_the_golden_model_does_under_it(tmp_path: Path,
                                                                    random_export) -> None:
    """A budget below T nests the stem's rows (SPEC.md section 5): the benchmark's
    accumulates at every budget are the golden model's stem work under that budget."""
    mask = np.array([[0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 1], [0, 1, 1, 1],
                     [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    folder = random_export(tmp_path, seed=4, image_shape=[1, 9, 9], dim=8, t_max=4,
                           stem=STEM, mask=mask)
    images = np.random.default_rng(0).integers(0, 256, size=(3, 1, 9, 9), dtype=np.uint8)
    golden = GoldenModel(load_export(folder))
    rows = stem_cycles(str(folder), lanes=4, images=images)
    for row in rows:
        work = golden.run(images, budget=row["budget"]).work
        expected = (work["embed_ac_ops"] + work["stem_ac_ops"]).double().mean()
        assert row["accumulates"] == float(expected), row["budget"]
