"""``golden_vectors.npz`` (``model/export/vectors.py``): written, read back, and refused in one
line when a file, a key or a shape does not fit the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepvit.model.export import Export, load_export
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.vectors import (
    STEM_WORK_KEY,
    VECTOR_WORK_KEYS,
    VECTORS_FILE,
    load_golden_vectors,
    write_golden_vectors,
)

IMAGES = 6
BUDGETS = [1, 2, 3]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    """The tiny export with vectors of the right shapes (their values are not checked here)."""
    export = load_export(random_export(tmp_path_factory.mktemp("export") / "tiny", seed=7))
    rng = np.random.default_rng(3)
    classes, layers = export.arch["num_classes"], len(export.layer_names())
    outputs = {
        "logits": rng.integers(-99, 100, size=(len(BUDGETS), IMAGES, classes)),
        "predicted": rng.integers(0, classes, size=(len(BUDGETS), IMAGES)),
        "spike_totals": rng.integers(0, 99, size=(len(BUDGETS), IMAGES, layers)),
        **{key: rng.integers(0, 999, size=(len(BUDGETS), IMAGES)) for key in VECTOR_WORK_KEYS},
    }
    images = rng.integers(0, 256, size=(IMAGES, *export.arch["image_shape"]), dtype=np.uint8)
    write_golden_vectors(export.path / VECTORS_FILE, images, rng.integers(0, classes, IMAGES),
                         BUDGETS, outputs)
    return export


def test_golden_vectors_are_checked(export, tmp_path: Path):
    vectors = load_golden_vectors(export)
    assert vectors.budgets == [1, 2, 3] and vectors.images.shape == (6, 1, 4, 4)
    broken = tmp_path / "export"
    broken.mkdir()
    for name in ("manifest.yaml", "weights.npz"):
        (broken / name).write_bytes((export.path / name).read_bytes())
    copy = load_export(broken)
    with pytest.raises(StepvitError, match="golden_vectors.npz is missing"):
        load_golden_vectors(copy)
    arrays = dict(np.load(export.path / "golden_vectors.npz"))
    np.savez(broken / "golden_vectors.npz", **{k: v for k, v in arrays.items() if k != "ac_ops"})
    with pytest.raises(StepvitError, match="missing key 'ac_ops'"):
        load_golden_vectors(copy)
    arrays["logits"] = arrays["logits"][:, :, :2]
    np.savez(broken / "golden_vectors.npz", **arrays)
    with pytest.raises(StepvitError, match=r"logits: expected shape \[3, 6, 3\], got \[3, 6, 2\]"):
        load_golden_vectors(copy)


def test_the_vectors_read_back_as_written(export) -> None:
    vectors = load_golden_vectors(export)
    with np.load(export.path / VECTORS_FILE) as written:
        np.testing.assert_array_equal(vectors.images, written["images"])
        np.testing.assert_array_equal(vectors.labels, written["labels"])
        for key, value in vectors.outputs.items():
            np.testing.assert_array_equal(value, written[key], err_msg=key)


@pytest.mark.parametrize(("key", "change", "message"), [
    ("images", lambda a: a.astype(np.int64), "images: expected uint8, got int64"),
    ("predicted", lambda a: a[0], r"predicted: expected 2 dimensions, got shape \[6\]"),
    ("labels", lambda a: a[:5], r"labels: expected shape \[6\], got \[5\]"),
    ("spike_totals", lambda a: a[:2], r"spike_totals: expected shape \[3, 6, 9\], got \[2, 6, 9\]"),
], ids=["images-not-uint8", "predicted-one-dimension", "labels-one-short", "budgets-one-short"])
def test_a_key_that_does_not_fit_the_export_is_refused(export, tmp_path: Path, key, change,
                                                       message) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("manifest.yaml", "weights.npz"):
        (folder / name).write_bytes((export.path / name).read_bytes())
    arrays = dict(np.load(export.path / VECTORS_FILE))
    arrays[key] = change(arrays[key])
    np.savez(folder / VECTORS_FILE, **arrays)
    with pytest.raises(StepvitError, match=rf"^{VECTORS_FILE}: {message}$"):
        load_golden_vectors(load_export(folder))


def test_a_stem_exports_vectors_keep_the_stems_work(export, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("manifest.yaml", "weights.npz"):
        (folder / name).write_bytes((export.path / name).read_bytes())
    arrays = dict(np.load(export.path / VECTORS_FILE))
    arrays[STEM_WORK_KEY] = arrays["ac_ops"] // 2
    np.savez(folder / VECTORS_FILE, **arrays)
    vectors = load_golden_vectors(load_export(folder))
    np.testing.assert_array_equal(vectors.outputs[STEM_WORK_KEY], arrays["ac_ops"] // 2)
    assert STEM_WORK_KEY not in load_golden_vectors(export).outputs
    arrays[STEM_WORK_KEY] = arrays[STEM_WORK_KEY][:2]
    np.savez(folder / VECTORS_FILE, **arrays)
    with pytest.raises(StepvitError, match=r"stem_ac_ops: expected shape \[3, 6\], got \[2, 6\]"):
        load_golden_vectors(load_export(folder))
