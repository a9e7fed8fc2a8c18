"""The export reader refuses every kind of bad export with one line naming the field."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import yaml

from stepvit.host.errors import ExportError, StepvitError
from stepvit.host.export import config_hash_of, load_export, signed_bits, worst_case_bounds
from stepvit.model.random_export import make_random_export

TINY = dict(image_shape=[1, 4, 4], patch=2, dim=8, heads=2, depth=1, mlp_dim=16,
            num_classes=4, t_max=3)


@pytest.fixture()
def export_dir(tmp_path: Path) -> Path:
    return make_random_export(tmp_path / "export", **TINY, seed=3)


def read_manifest(directory: Path) -> dict:
    return yaml.safe_load((directory / "manifest.yaml").read_text())


def write_manifest(directory: Path, manifest: dict, *, rehash: bool = True) -> None:
    if rehash:
        manifest["config_hash"] = f"{config_hash_of(manifest):08x}"
    (directory / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def write_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    """Rewrite weights.npz and update the checksum and hash, so only the arrays are wrong."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (directory / "weights.npz").write_bytes(buffer.getvalue())
    manifest = read_manifest(directory)
    manifest["weights_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    write_manifest(directory, manifest)


def arrays_of(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / "weights.npz") as archive:
        return {key: archive[key] for key in archive.files}


def refused(directory: Path) -> str:
    with pytest.raises(ExportError) as error:
        load_export(directory)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_valid_export_loads_with_its_helpers(export_dir: Path) -> None:
    export = load_export(export_dir)
    assert export.t_max == 3
    assert export.module_names == ["embed", "blocks.0.attn", "blocks.0.mlp", "head"]
    assert export.layer_names() == [
        "embed", "blocks.0.attn.in", "blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v",
        "blocks.0.attn.attn", "blocks.0.mlp.in", "blocks.0.mlp.fc1", "head.in",
    ]
    assert export.timestep_mask.dtype == np.uint8 and export.timestep_mask.shape == (4, 3)
    assert (export.timestep_mask.sum(axis=1) >= 1).all()
    assert export.thresholds["blocks.0.mlp.fc1"].shape == (16,)
    assert export.thresholds["embed"].dtype == np.int64
    assert export.config_hash == int(export.manifest["config_hash"], 16)
    assert export.manifest["accuracy"]["integer"] is None
    bounds = worst_case_bounds(export.manifest, export.arrays)
    assert export.bit_widths == {key: signed_bits(bound) for key, bound in bounds.items()}


def test_budget_mask_keeps_the_first_active_steps(export_dir: Path) -> None:
    export = load_export(export_dir)
    mask = np.array([[1, 1, 1], [0, 1, 1], [1, 0, 1], [0, 0, 1]], dtype=np.uint8)
    manifest = dict(export.manifest, timestep_mask=mask.tolist())
    capped = type(export)(export.path, manifest, export.arrays)
    assert capped.budget_mask(1).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert capped.budget_mask(2).tolist() == [[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1]]
    assert capped.budget_mask(3).tolist() == mask.tolist()
    assert capped.budget_mask(None).tolist() == mask.tolist()
    with pytest.raises(StepvitError, match="budget must be at least 1"):
        capped.budget_mask(0)


def test_missing_directory_and_files(export_dir: Path, tmp_path: Path) -> None:
    assert "no such export directory" in refused(tmp_path / "nowhere")
    (export_dir / "weights.npz").unlink()
    assert refused(export_dir).startswith("weights.npz: missing")
    (export_dir / "manifest.yaml").unlink()
    assert refused(export_dir).startswith("manifest.yaml: missing")


def test_missing_and_extra_manifest_keys(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    del manifest["thresholds"]
    write_manifest(export_dir, manifest)
    assert refused(export_dir) == "manifest.yaml: thresholds: missing"
    manifest = read_manifest(export_dir)
    manifest["thresholds"] = {}
    manifest["comment"] = "x"
    write_manifest(export_dir, manifest)
    assert refused(export_dir) == "manifest.yaml: comment: unexpected key"


def test_missing_nested_key(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    del manifest["architecture"]["dim"]
    write_manifest(export_dir, manifest)
    assert refused(export_dir) == "manifest.yaml: architecture.dim: missing"


def test_threshold_count_and_range(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["thresholds"]["blocks.0.attn.q"].pop()
    write_manifest(export_dir, manifest)
    assert refused(export_dir) == (
        "manifest.yaml: thresholds.blocks.0.attn.q: expected 8 values, got 7"
    )
    manifest = read_manifest(export_dir)
    manifest["thresholds"]["blocks.0.attn.q"] += [5]
    manifest["thresholds"]["blocks.0.attn.q"][3] = 0
    write_manifest(export_dir, manifest)
    assert refused(export_dir) == (
        "manifest.yaml: thresholds.blocks.0.attn.q.3: expected at least 1, got 0"
    )


def test_threshold_outside_the_membrane_width(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["thresholds"]["head.in"][0] = 2 ** (manifest["bit_widths"]["membrane"] - 1)
    write_manifest(export_dir, manifest)
    assert refused(export_dir).startswith("manifest.yaml: thresholds.head.in.0: expected at most")


def test_unknown_schema_version(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["schema_version"] = 2
    write_manifest(export_dir, manifest)
    assert refused(export_dir).startswith("manifest.yaml: schema_version: unknown version 2")


def test_config_hash_mismatch(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["name"] = "renamed"
    write_manifest(export_dir, manifest, rehash=False)
    assert refused(export_dir).startswith("manifest.yaml: config_hash:")


def test_accuracy_is_outside_the_config_hash(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["accuracy"]["float"] = 0.5
    write_manifest(export_dir, manifest, rehash=False)
    assert load_export(export_dir).manifest["accuracy"]["float"] == 0.5


def test_mask_values_and_summaries(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    original = manifest["timestep_mask"][1][0]
    manifest["timestep_mask"][1][0] = 2
    write_manifest(export_dir, manifest)
    assert refused(export_dir).startswith("manifest.yaml: timestep_mask.1: expected 0/1 values")
    manifest["timestep_mask"][1][0] = 1 - original
    write_manifest(export_dir, manifest)
    assert refused(export_dir).startswith("manifest.yaml: timesteps_per_module.blocks.0.attn:")


def test_checksum_mismatch(export_dir: Path) -> None:
    arrays = arrays_of(export_dir)
    arrays["head.bias"] = arrays["head.bias"] + 1
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (export_dir / "weights.npz").write_bytes(buffer.getvalue())
    assert refused(export_dir).startswith("manifest.yaml: weights_sha256: checksum mismatch")


def test_missing_and_extra_array(export_dir: Path) -> None:
    arrays = arrays_of(export_dir)
    removed = arrays.pop("blocks.0.mlp.fc2.bias")
    write_arrays(export_dir, arrays)
    assert refused(export_dir) == "weights.npz: blocks.0.mlp.fc2.bias: missing"
    arrays["blocks.0.mlp.fc2.bias"] = removed
    arrays["blocks.0.attn.q.scale"] = removed
    write_arrays(export_dir, arrays)
    assert refused(export_dir) == "weights.npz: blocks.0.attn.q.scale: unexpected key"


def test_wrong_shape_and_dtype(export_dir: Path) -> None:
    arrays = arrays_of(export_dir)
    original = arrays["blocks.0.attn.k.weight"]
    arrays["blocks.0.attn.k.weight"] = original[:, :7]
    write_arrays(export_dir, arrays)
    assert refused(export_dir) == (
        "weights.npz: blocks.0.attn.k.weight: expected shape [8, 8], got [8, 7]"
    )
    arrays["blocks.0.attn.k.weight"] = original.astype(np.int32)
    write_arrays(export_dir, arrays)
    assert refused(export_dir) == (
        "weights.npz: blocks.0.attn.k.weight: expected dtype int8, got int32"
    )


def test_value_outside_its_bit_width(export_dir: Path) -> None:
    arrays = arrays_of(export_dir)
    width = read_manifest(export_dir)["bit_widths"]["current"]
    arrays["blocks.0.attn.v.bias"][2] = 2 ** (width - 1)
    write_arrays(export_dir, arrays)
    assert refused(export_dir).startswith(
        f"weights.npz: blocks.0.attn.v.bias: value {2 ** (width - 1)} at [2] is outside"
    )


def test_stream_spike_must_be_positive(export_dir: Path) -> None:
    arrays = arrays_of(export_dir)
    arrays["stream_spike"][0] = 0
    write_arrays(export_dir, arrays)
    assert refused(export_dir).startswith("weights.npz: stream_spike: value 0 at [0] is outside")


def test_bit_width_below_its_worst_case(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["bit_widths"]["stream"] -= 1
    write_manifest(export_dir, manifest)
    assert refused(export_dir).startswith("manifest.yaml: bit_widths.stream:")


def test_bit_width_above_the_hardware(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["bit_widths"]["logit"] = 33
    write_manifest(export_dir, manifest)
    assert refused(export_dir) == "manifest.yaml: bit_widths.logit: expected at most 32, got 33"


def test_attention_threshold_is_pinned_to_the_shift(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["thresholds"]["blocks.0.attn.attn"][0] += 1
    write_manifest(export_dir, manifest)
    assert refused(export_dir).startswith("manifest.yaml: thresholds.blocks.0.attn.attn:")


def test_not_yaml(export_dir: Path) -> None:
    (export_dir / "manifest.yaml").write_text("a: [1, 2\n")
    assert refused(export_dir).startswith("manifest.yaml: not valid YAML")


def test_config_hash_changes_with_the_weights(tmp_path: Path) -> None:
    first = load_export(make_random_export(tmp_path / "a", **TINY, seed=1))
    again = load_export(make_random_export(tmp_path / "b", **TINY, seed=1))
    other = load_export(make_random_export(tmp_path / "c", **TINY, seed=2))
    assert first.config_hash == again.config_hash
    assert first.config_hash != other.config_hash
