"""The integer golden model against hand-computed cases and a scalar reference of SPEC §3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scalar_reference import reference_run

from stepvit.model.export import Export, load_export
from stepvit.model.export.errors import StepvitError
from stepvit.model.golden import GoldenModel, lif_step, worst_case_bounds

TINY = dict(image_shape=[1, 4, 4], patch=2, dim=4, heads=2, depth=1, mlp_dim=8,
            num_classes=3, t_max=3)
DIGITS = dict(image_shape=[1, 8, 8], patch=2, dim=32, heads=2, depth=2, mlp_dim=64,
              num_classes=10, t_max=4)



def random_images(count: int, shape: list[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def with_arrays(export: Export, **changes: np.ndarray) -> Export:
    arrays = dict(export.arrays)
    arrays.update(changes)
    return Export(export.path, export.manifest, arrays)


@pytest.fixture(scope="module")
def digits_export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    return load_export(random_export(tmp_path_factory.mktemp("digits"), **DIGITS, seed=5))


def test_lif_hard_reset_by_hand() -> None:
    threshold = torch.tensor([4])
    v = torch.tensor([0])
    trace = []
    for current in (3, 3, 1, 9, -7):
        v, s = lif_step(v, torch.tensor([current]), threshold, 1, "hard")
        trace.append((int(v), int(s)))
    # 0+3=3 <4; 3-1+3=5 fires -> 0; 0+1=1; 1-0+9=10 fires -> 0; 0-7=-7
    assert trace == [(3, 0), (0, 1), (1, 0), (0, 1), (-7, 0)]


def test_lif_soft_reset_and_floor_leak_by_hand() -> None:
    threshold = torch.tensor([4])
    v = torch.tensor([-3])
    # leak of -3 with k=1: -3 - floor(-3/2) = -3 - (-2) = -1 (floor, not toward zero)
    v, s = lif_step(v, torch.tensor([0]), threshold, 1, "soft")
    assert (int(v), int(s)) == (-1, 0)
    v, s = lif_step(torch.tensor([3]), torch.tensor([6]), threshold, 1, "soft")
    # 3 - 1 + 6 = 8 fires, keeps 8 - 4 = 4
    assert (int(v), int(s)) == (4, 1)
    v, s = lif_step(torch.tensor([7]), torch.tensor([0]), threshold, 2, "hard")
    # 7 - (7 >> 2) = 6 fires -> 0
    assert (int(v), int(s)) == (0, 1)


@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_matches_the_scalar_reference_with_masks_and_budgets(tmp_path: Path, reset: str,
                                                            random_export) -> None:
    export = load_export(random_export(tmp_path, **TINY, seed=11, reset=reset))
    images = random_images(4, TINY["image_shape"], seed=2)
    model = GoldenModel(export)
    mask = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=np.uint8)
    for budget in (None, 1, 2):
        result = model.run(images, masks=mask, budget=budget)
        capped = result.mask.tolist()
        for index, image in enumerate(images):
            logits, spikes, ac_ops = reference_run(export, image, capped)
            assert result.logits[index].tolist() == logits, f"image {index} budget {budget}"
            assert int(result.work["ac_ops"][index]) == ac_ops, f"image {index} budget {budget}"
            for name, per_step in spikes.items():
                assert result.spikes[name][index].tolist() == per_step, (
                    f"image {index} budget {budget} layer {name}"
                )
    assert int(result.layer_spike_totals().sum()) > 0


def test_the_scalar_comparison_sees_a_corrupted_threshold(tmp_path: Path, random_export) -> None:
    export = load_export(random_export(tmp_path, **TINY, seed=11))
    images = random_images(4, TINY["image_shape"], seed=2)
    result = GoldenModel(export).run(images)
    manifest = dict(export.manifest)
    manifest["thresholds"] = dict(manifest["thresholds"])
    manifest["thresholds"]["embed"] = [2 * t for t in manifest["thresholds"]["embed"]]
    corrupted = Export(export.path, manifest, export.arrays)
    mask = export.timestep_mask.tolist()
    differences = sum(
        reference_run(corrupted, image, mask)[1]["embed"] != result.spikes["embed"][i].tolist()
        for i, image in enumerate(images)
    )
    assert differences > 0


def test_kv_and_qk_attention_forms_are_identical(digits_export: Export) -> None:
    images = random_images(32, DIGITS["image_shape"])
    kv = GoldenModel(digits_export, attention_form="kv").run(images)
    qk = GoldenModel(digits_export, attention_form="qk").run(images)
    assert torch.equal(kv.logits, qk.logits)
    assert torch.equal(kv.layer_spike_totals(), qk.layer_spike_totals())
    assert int(kv.spikes["blocks.0.attn.attn"].sum()) > 0


def test_budget_t_is_the_trained_mask(digits_export: Export) -> None:
    images = random_images(16, DIGITS["image_shape"])
    model = GoldenModel(digits_export)
    plain = model.run(images)
    capped = model.run(images, budget=DIGITS["t_max"])
    assert torch.equal(plain.logits, capped.logits)
    assert torch.equal(plain.layer_spike_totals(), capped.layer_spike_totals())
    assert torch.equal(plain.work["ac_ops"], capped.work["ac_ops"])
    with pytest.raises(StepvitError,
                       match=r"^budget 9 is outside 1\.\.4 \(this export has t_max = 4\)$"):
        model.run(images, budget=DIGITS["t_max"] + 5)


def test_ac_ops_do_not_grow_as_the_budget_shrinks(digits_export: Export) -> None:
    images = random_images(32, DIGITS["image_shape"])
    model = GoldenModel(digits_export)
    all_steps = np.ones((2 * DIGITS["depth"] + 2, DIGITS["t_max"]), dtype=np.uint8)
    totals = [int(model.run(images, budget=b, masks=all_steps).work["ac_ops"].sum())
              for b in range(DIGITS["t_max"], 0, -1)]
    assert totals == sorted(totals, reverse=True)
    assert totals[-1] < totals[0]


def test_a_corrupted_weight_changes_the_output(digits_export: Export) -> None:
    images = random_images(16, DIGITS["image_shape"])
    reference = GoldenModel(digits_export).run(images)
    weight = digits_export.arrays["blocks.0.attn.q.weight"].copy()
    weight[0, :] = 127
    corrupted = GoldenModel(with_arrays(digits_export, **{"blocks.0.attn.q.weight": weight}))
    result = corrupted.run(images)
    assert not torch.equal(reference.layer_spike_totals(), result.layer_spike_totals())
    head = digits_export.arrays["head.weight"].copy()
    head[3, :] += 1
    shifted = GoldenModel(with_arrays(digits_export, **{"head.weight": head})).run(images)
    assert not torch.equal(reference.logits[:, 3], shifted.logits[:, 3])
    assert torch.equal(reference.logits[:, :3], shifted.logits[:, :3])


def test_predicted_is_the_first_largest_logit(digits_export: Export) -> None:
    flat = with_arrays(
        digits_export,
        **{"head.weight": np.zeros_like(digits_export.arrays["head.weight"]),
           "head.bias": np.array([1, 5, 2, 5, 0, 0, 0, 0, 0, 5], dtype=np.int32)},
    )
    result = GoldenModel(flat).run(random_images(3, DIGITS["image_shape"]))
    assert result.predicted.tolist() == [1, 1, 1]


def test_work_counts(digits_export: Export) -> None:
    images = random_images(8, DIGITS["image_shape"])
    result = GoldenModel(digits_export).run(images)
    n, d, c, p = 16, 32, 1, 2
    assert result.work["mac_ops"].tolist() == [n * d * c * p * p] * 8
    bits = np.unpackbits(images.reshape(8, -1), axis=1).sum(axis=1)
    assert result.work["embed_ac_ops"].tolist() == (bits * d).tolist()
    assert (result.work["ac_ops"] < result.work["dense_ac_ops"]).all()
    assert (result.work["ac_ops"] > 0).all()


def test_bad_images_are_refused(digits_export: Export) -> None:
    model = GoldenModel(digits_export)
    with pytest.raises(StepvitError, match="uint8"):
        model.run(np.zeros((1, 1, 8, 8), dtype=np.int16))
    with pytest.raises(StepvitError, match=r"shape \[B, 1, 8, 8\]"):
        model.run(np.zeros((1, 1, 8, 7), dtype=np.uint8))
    with pytest.raises(StepvitError, match="masks must be 0/1"):
        model.run(np.zeros((1, 1, 8, 8), dtype=np.uint8), masks=np.ones((3, 4)))


def test_bounds_cover_what_the_images_reach(digits_export: Export) -> None:
    bounds = worst_case_bounds(digits_export)
    white = np.full((1, 1, 8, 8), 255, dtype=np.uint8)
    current, _ = GoldenModel(digits_export).embed_current(torch.from_numpy(white).long())
    assert int(current.abs().max()) <= bounds["embed_current"]
    assert bounds["attention"] == 16 * 16
