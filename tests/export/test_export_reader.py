"""The export reader refuses every kind of bad export with one line naming the field.

Each check of the validator has a row in a table: the row corrupts one field of a valid
export, the harness recomputes ``weights_sha256`` and ``config_hash`` (unless the row
corrupts one of them), so that only the corrupted check can object, and the refusal must be
exactly the row's line. Without its check, a row's export loads or fails with another line.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from stepvit.model.export import config_hash_of, load_export, signed_bits, worst_case_bounds
from stepvit.model.export.errors import ExportError, StepvitError

#: The tiny export with a fourth class.
CLASSES = 4
MANIFEST = "manifest.yaml"
WEIGHTS = "weights.npz"
BIT_WIDTHS = ("weight", "embed_current", "stream", "current", "attention", "membrane", "logit")

#: Corrupts the manifest and the arrays of a valid export in place.
Edit = Callable[[dict, dict], None]
#: The refusal: one exact line, or one made from the valid export's manifest and arrays.
Message = str | Callable[[dict, dict], str]


@pytest.fixture(scope="module")
def valid_export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Path:
    return random_export(tmp_path_factory.mktemp("valid") / "export", num_classes=CLASSES,
                         seed=3)


@pytest.fixture()
def export_dir(valid_export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(valid_export, tmp_path / "export"))


def read_manifest(directory: Path) -> dict:
    return yaml.safe_load((directory / MANIFEST).read_text())


def write_manifest(directory: Path, manifest: dict, *, rehash: bool = True) -> None:
    if rehash:
        manifest["config_hash"] = f"{config_hash_of(manifest):08x}"
    (directory / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def write_weights(directory: Path, data: bytes) -> None:
    """Replace weights.npz and update the checksum and hash, so only the contents are wrong."""
    (directory / WEIGHTS).write_bytes(data)
    manifest = read_manifest(directory)
    manifest["weights_sha256"] = hashlib.sha256(data).hexdigest()
    write_manifest(directory, manifest)


def write_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    write_weights(directory, npz_bytes(arrays))


def arrays_of(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / WEIGHTS) as archive:
        return {key: archive[key] for key in archive.files}


def refused(directory: Path) -> str:
    with pytest.raises(ExportError) as error:
        load_export(directory)
    return str(error.value)


def corrupt(directory: Path, edit: Edit) -> None:
    """Apply ``edit``, then rewrite the checksum and the hash unless the edit changed them."""
    manifest, arrays = read_manifest(directory), arrays_of(directory)
    before = {key: array.copy() for key, array in arrays.items()}
    declared = {key: manifest[key] for key in ("weights_sha256", "config_hash")}
    edit(manifest, arrays)
    arrays_changed = arrays.keys() != before.keys() or any(
        arrays[key].dtype != array.dtype or not np.array_equal(arrays[key], array)
        for key, array in before.items()
    )
    if arrays_changed:
        data = npz_bytes(arrays)
        (directory / WEIGHTS).write_bytes(data)
        if manifest.get("weights_sha256") == declared["weights_sha256"]:
            manifest["weights_sha256"] = hashlib.sha256(data).hexdigest()
    write_manifest(directory, manifest,
                   rehash=manifest.get("config_hash") == declared["config_hash"])


def _document(manifest: dict, arrays: dict, path: tuple[Any, ...]) -> tuple[Any, Any]:
    """Return the container that holds ``path`` (its first element names the file) and the key."""
    file, *keys = path
    document = manifest if file == MANIFEST else arrays
    for key in keys[:-1]:
        document = document[key]
    return document, keys[-1]


def put(*path: Any, value: Any) -> Edit:
    def edit(manifest: dict, arrays: dict) -> None:
        document, key = _document(manifest, arrays, path)
        document[key] = value
    return edit


def change(*path: Any, how: Callable[[Any], Any]) -> Edit:
    def edit(manifest: dict, arrays: dict) -> None:
        document, key = _document(manifest, arrays, path)
        document[key] = how(document[key])
    return edit


def drop(*path: Any) -> Edit:
    def edit(manifest: dict, arrays: dict) -> None:
        document, key = _document(manifest, arrays, path)
        del document[key]
    return edit


def check(name: str, edit: Edit, message: Message) -> Any:
    return pytest.param(edit, message, id=name)


def integer_checks(path: tuple[str, ...], *, not_integer: Any,
                   minimum: int | None = None, maximum: int | None = None) -> list[Any]:
    """The rows of one ``_require_int`` call: not an integer, below, above its range."""
    field = f"{MANIFEST}: {'.'.join(path)}"
    name = "-".join(path).replace("_", "-")
    rows = [check(f"{name}-not-an-integer", put(MANIFEST, *path, value=not_integer),
                  f"{field}: expected an integer, got {not_integer!r}")]
    if minimum is not None:
        rows.append(check(f"{name}-below-{minimum}", put(MANIFEST, *path, value=minimum - 1),
                          f"{field}: expected at least {minimum}, got {minimum - 1}"))
    if maximum is not None:
        rows.append(check(f"{name}-above-{maximum}", put(MANIFEST, *path, value=maximum + 1),
                          f"{field}: expected at most {maximum}, got {maximum + 1}"))
    return rows


def section_checks(section: str, *, not_mapping: Any, missing: str, extra: str) -> list[Any]:
    """The rows of one ``_require_keys`` call on a manifest section."""
    name = section.replace("_", "-")
    return [
        check(f"{name}-not-a-mapping", put(MANIFEST, section, value=not_mapping),
              f"{MANIFEST}: {section}: expected a mapping, got {type(not_mapping).__name__}"),
        check(f"{name}-key-missing", drop(MANIFEST, section, missing),
              f"{MANIFEST}: {section}.{missing}: missing"),
        check(f"{name}-key-unexpected", put(MANIFEST, section, extra, value=1),
              f"{MANIFEST}: {section}.{extra}: unexpected key"),
    ]


def per_block_of(mask: list[list[int]]) -> list[int]:
    """Steps where the (only) block's attn or mlp is active, from the mask rows."""
    return [sum(1 for attn, mlp in zip(mask[1], mask[2]) if attn or mlp)]


def average_of(mask: list[list[int]]) -> float:
    return sum(map(sum, mask)) / len(mask)


def with_a_two(row: list[int]) -> list[int]:
    step = row.index(1)
    return row[:step] + [2] + row[step + 1:]


def with_a_bool(row: list[int]) -> list[Any]:
    return [bool(row[0]), *row[1:]]


def two_in_the_attn_row(manifest: dict, arrays: dict) -> None:
    """Write 2 for an active step of blocks.0.attn and keep every summary consistent with it."""
    mask = manifest["timestep_mask"]
    mask[1] = with_a_two(mask[1])
    manifest["timesteps_per_module"]["blocks.0.attn"] += 1
    manifest["avg_timesteps"] = average_of(mask)


def membrane_limit(manifest: dict) -> int:
    return 2 ** (manifest["bit_widths"]["membrane"] - 1) - 1


def head_threshold(offset: int) -> Edit:
    """Set the first head.in threshold to the membrane's largest value plus ``offset``."""
    def edit(manifest: dict, arrays: dict) -> None:
        manifest["thresholds"]["head.in"][0] = membrane_limit(manifest) + offset
    return edit


def below_its_worst_case(name: str) -> Any:
    """One bit less than the writer's proven width of ``name``."""
    def message(manifest: dict, arrays: dict) -> str:
        bound = worst_case_bounds(manifest, arrays)[name]
        return (f"{MANIFEST}: bit_widths.{name}: {manifest['bit_widths'][name] - 1} bits cannot "
                f"hold the worst case {bound} (needs {signed_bits(bound)})")
    return check(f"bit-widths-{name.replace('_', '-')}-below-its-worst-case",
                 change(MANIFEST, "bit_widths", name, how=lambda width: width - 1), message)


def outside_its_width(name: str, key: str, index: tuple[int, ...], width_name: str, *,
                      low: bool = False) -> Any:
    """Write, at ``index`` of array ``key``, the first value outside ``bit_widths.width_name``."""
    def bounds(manifest: dict) -> tuple[int, int]:
        limit = 2 ** (manifest["bit_widths"][width_name] - 1)
        return (1 if key == "stream_spike" else -limit), limit - 1

    def value_of(manifest: dict) -> int:
        lowest, highest = bounds(manifest)
        return lowest - 1 if low else highest + 1

    def edit(manifest: dict, arrays: dict) -> None:
        arrays[key][index] = value_of(manifest)

    def message(manifest: dict, arrays: dict) -> str:
        lowest, highest = bounds(manifest)
        return (f"{WEIGHTS}: {key}: value {value_of(manifest)} at {list(index)} is outside "
                f"[{lowest}, {highest}] (bit_widths.{width_name} = "
                f"{manifest['bit_widths'][width_name]})")
    return check(name, edit, message)


CHECKS = [
    # check_manifest: the top level
    check("schema-version-unknown", put(MANIFEST, "schema_version", value=3),
          "manifest.yaml: schema_version: unknown version 3 (this reader knows 1 and 2: a "
          "newer stepvit wrote it?)"),
    check("schema-version-not-an-integer", put(MANIFEST, "schema_version", value=True),
          "manifest.yaml: schema_version: unknown version True (this reader knows 1 and 2: a "
          "newer stepvit wrote it?)"),
    check("schema-version-2-without-a-stem", put(MANIFEST, "schema_version", value=2),
          "manifest.yaml: architecture.stem: missing"),
    check("manifest-key-missing", drop(MANIFEST, "thresholds"),
          "manifest.yaml: thresholds: missing"),
    check("manifest-key-unexpected", put(MANIFEST, "comment", value="x"),
          "manifest.yaml: comment: unexpected key"),
    check("name-empty", put(MANIFEST, "name", value=""),
          "manifest.yaml: name: expected a non-empty string"),
    check("name-not-a-string", put(MANIFEST, "name", value=7),
          "manifest.yaml: name: expected a non-empty string"),
    *integer_checks(("t_max",), not_integer="3", minimum=1, maximum=32),
    check("weights-sha256-not-lowercase-hex", change(MANIFEST, "weights_sha256", how=str.upper),
          "manifest.yaml: weights_sha256: expected 64 lowercase hex digits"),
    check("config-hash-not-a-string", put(MANIFEST, "config_hash", value=12345678),
          "manifest.yaml: config_hash: expected 8 lowercase hex digits (a quoted string), "
          "got 12345678"),
    check("config-hash-mismatch", put(MANIFEST, "config_hash", value="00000000"),
          lambda manifest, arrays: "manifest.yaml: config_hash: 00000000 does not match the "
          f"manifest (computed {config_hash_of(manifest):08x})"),
    # _check_architecture
    *section_checks("architecture", not_mapping=[1, 4, 4], missing="dim", extra="stride"),
    check("image-shape-not-three-values", put(MANIFEST, "architecture", "image_shape",
                                              value=[1, 4]),
          "manifest.yaml: architecture.image_shape: expected 3 positive integers [C, H, W], "
          "got [1, 4]"),
    check("image-shape-not-positive", put(MANIFEST, "architecture", "image_shape",
                                          value=[1, 4, 0]),
          "manifest.yaml: architecture.image_shape: expected 3 positive integers [C, H, W], "
          "got [1, 4, 0]"),
    *[row for key in ("patch", "dim", "heads", "depth", "mlp_dim", "num_classes", "tokens")
      for row in integer_checks(("architecture", key), not_integer=2.0, minimum=1)],
    check("patch-does-not-divide-the-image", put(MANIFEST, "architecture", "patch", value=3),
          "manifest.yaml: architecture.patch: 3 does not divide the image 4x4"),
    check("tokens-not-the-patch-count", put(MANIFEST, "architecture", "tokens", value=5),
          "manifest.yaml: architecture.tokens: expected 4 for this image and patch, got 5"),
    check("heads-do-not-divide-dim", put(MANIFEST, "architecture", "heads", value=3),
          "manifest.yaml: architecture.heads: 3 does not divide dim 8"),
    check("class-names-not-strings", put(MANIFEST, "architecture", "class_names",
                                         value=[0, 1, 2, 3]),
          "manifest.yaml: architecture.class_names: expected a list of strings"),
    check("class-names-not-a-list", put(MANIFEST, "architecture", "class_names", value="0123"),
          "manifest.yaml: architecture.class_names: expected a list of strings"),
    check("class-names-count", put(MANIFEST, "architecture", "class_names",
                                   value=["0", "1", "2"]),
          "manifest.yaml: architecture.class_names: expected 4 names, got 3"),
    # _check_neuron
    *section_checks("neuron", not_mapping="hard", missing="reset", extra="threshold"),
    *integer_checks(("neuron", "leak_shift"), not_integer=1.0, minimum=0,
                    maximum=31),
    *integer_checks(("neuron", "attn_shift"), not_integer="0", minimum=0,
                    maximum=30),
    check("reset-rule-unknown", put(MANIFEST, "neuron", "reset", value="leaky"),
          "manifest.yaml: neuron.reset: expected one of hard, soft, got 'leaky'"),
    check("reset-rule-not-a-string", put(MANIFEST, "neuron", "reset", value=None),
          "manifest.yaml: neuron.reset: expected one of hard, soft, got None"),
    # _check_masks
    check("modules-order", put(MANIFEST, "modules",
                               value=["embed", "blocks.0.mlp", "blocks.0.attn", "head"]),
          "manifest.yaml: modules: expected ['embed', 'blocks.0.attn', 'blocks.0.mlp', 'head'], "
          "got ['embed', 'blocks.0.mlp', 'blocks.0.attn', 'head']"),
    check("mask-row-count", change(MANIFEST, "timestep_mask", how=lambda rows: rows + [[0] * 3]),
          "manifest.yaml: timestep_mask: expected 4 rows, got 5"),
    check("mask-not-a-list", put(MANIFEST, "timestep_mask", value="1,1,0"),
          "manifest.yaml: timestep_mask: expected 4 rows, got str"),
    check("mask-row-length", change(MANIFEST, "timestep_mask", 2, how=lambda row: row + [0]),
          "manifest.yaml: timestep_mask.2: expected 3 values"),
    check("mask-row-not-a-list", put(MANIFEST, "timestep_mask", 2, value=1),
          "manifest.yaml: timestep_mask.2: expected 3 values"),
    check("mask-bit-not-an-integer", change(MANIFEST, "timestep_mask", 1, how=with_a_bool),
          lambda manifest, arrays: "manifest.yaml: timestep_mask.1: expected 0/1 values, got "
          f"{with_a_bool(manifest['timestep_mask'][1])}"),
    check("mask-bit-not-0-or-1", two_in_the_attn_row,
          lambda manifest, arrays: "manifest.yaml: timestep_mask.1: expected 0/1 values, got "
          f"{with_a_two(manifest['timestep_mask'][1])}"),
    *section_checks("timesteps_per_module", not_mapping=[2, 3, 2, 3], missing="head",
                    extra="blocks.1.attn"),
    check("timesteps-per-module-count",
          change(MANIFEST, "timesteps_per_module", "embed", how=lambda count: count + 1),
          lambda manifest, arrays: "manifest.yaml: timesteps_per_module.embed: the mask has "
          f"{sum(manifest['timestep_mask'][0])} active steps, "
          f"got {sum(manifest['timestep_mask'][0]) + 1}"),
    check("timesteps-per-block", change(MANIFEST, "timesteps_per_block", 0,
                                        how=lambda count: count + 1),
          lambda manifest, arrays: "manifest.yaml: timesteps_per_block: the mask gives "
          f"{per_block_of(manifest['timestep_mask'])}, "
          f"got {[per_block_of(manifest['timestep_mask'])[0] + 1]}"),
    check("timesteps-per-block-length", change(MANIFEST, "timesteps_per_block",
                                               how=lambda counts: counts + [0]),
          lambda manifest, arrays: "manifest.yaml: timesteps_per_block: the mask gives "
          f"{per_block_of(manifest['timestep_mask'])}, "
          f"got {per_block_of(manifest['timestep_mask']) + [0]}"),
    check("avg-timesteps", change(MANIFEST, "avg_timesteps", how=lambda average: average + 0.01),
          lambda manifest, arrays: "manifest.yaml: avg_timesteps: the mask gives "
          f"{average_of(manifest['timestep_mask']):.4f}, "
          f"got {average_of(manifest['timestep_mask']) + 0.01!r}"),
    check("avg-timesteps-not-a-number", put(MANIFEST, "avg_timesteps", value="2.5"),
          lambda manifest, arrays: "manifest.yaml: avg_timesteps: the mask gives "
          f"{average_of(manifest['timestep_mask']):.4f}, got '2.5'"),
    check("avg-timesteps-nan", put(MANIFEST, "avg_timesteps", value=float("nan")),
          lambda manifest, arrays: "manifest.yaml: avg_timesteps: the mask gives "
          f"{average_of(manifest['timestep_mask']):.4f}, got nan"),
    # _check_bit_widths
    *section_checks("bit_widths", not_mapping=16, missing="logit", extra="accumulator"),
    *[row for key in BIT_WIDTHS
      for row in integer_checks(("bit_widths", key), not_integer="16", minimum=2,
                                maximum=32)],
    check("bit-widths-weight-not-8", put(MANIFEST, "bit_widths", "weight", value=9),
          "manifest.yaml: bit_widths.weight: expected 8 (int8 weights), got 9"),
    # _check_thresholds
    *section_checks("thresholds", not_mapping=[1, 2], missing="head.in",
                    extra="blocks.0.attn.proj"),
    check("threshold-count", change(MANIFEST, "thresholds", "blocks.0.attn.q",
                                    how=lambda values: values[:-1]),
          "manifest.yaml: thresholds.blocks.0.attn.q: expected 8 values, got 7"),
    check("threshold-count-mlp-dim", change(MANIFEST, "thresholds", "blocks.0.mlp.fc1",
                                            how=lambda values: values[:8]),
          "manifest.yaml: thresholds.blocks.0.mlp.fc1: expected 16 values, got 8"),
    check("threshold-not-a-list", put(MANIFEST, "thresholds", "embed", value=5),
          "manifest.yaml: thresholds.embed: expected 8 values, got int"),
    check("threshold-not-an-integer", put(MANIFEST, "thresholds", "blocks.0.attn.q", 3,
                                          value=7.5),
          "manifest.yaml: thresholds.blocks.0.attn.q.3: expected an integer, got 7.5"),
    check("threshold-below-1", put(MANIFEST, "thresholds", "blocks.0.attn.q", 3, value=0),
          "manifest.yaml: thresholds.blocks.0.attn.q.3: expected at least 1, got 0"),
    check("threshold-above-the-membrane-width", head_threshold(1),
          lambda manifest, arrays: "manifest.yaml: thresholds.head.in.0: expected at most "
          f"{membrane_limit(manifest)}, got {membrane_limit(manifest) + 1}"),
    check("attn-threshold-not-2-to-the-attn-shift",
          change(MANIFEST, "thresholds", "blocks.0.attn.attn", 5, how=lambda value: value + 1),
          lambda manifest, arrays: "manifest.yaml: thresholds.blocks.0.attn.attn: expected every "
          f"value = 2**attn_shift = {2 ** manifest['neuron']['attn_shift']}"),
    # _check_accuracy
    *section_checks("accuracy", not_mapping=0.9, missing="integer", extra="top5"),
    check("accuracy-dataset-not-a-string", put(MANIFEST, "accuracy", "dataset", value=5),
          "manifest.yaml: accuracy.dataset: expected a string or null, got 5"),
    check("accuracy-split-not-a-string", put(MANIFEST, "accuracy", "split", value=["test"]),
          "manifest.yaml: accuracy.split: expected a string or null, got ['test']"),
    *integer_checks(("accuracy", "images"), not_integer=3.5, minimum=0),
    check("accuracy-float-above-1", put(MANIFEST, "accuracy", "float", value=1.5),
          "manifest.yaml: accuracy.float: expected a fraction in [0, 1] or null, got 1.5"),
    check("accuracy-integer-below-0", put(MANIFEST, "accuracy", "integer", value=-0.25),
          "manifest.yaml: accuracy.integer: expected a fraction in [0, 1] or null, got -0.25"),
    check("accuracy-integer-not-a-number", put(MANIFEST, "accuracy", "integer", value=True),
          "manifest.yaml: accuracy.integer: expected a fraction in [0, 1] or null, got True"),
    # check_arrays: key set, shapes, dtypes
    check("array-missing", drop(WEIGHTS, "blocks.0.mlp.fc2.bias"),
          "weights.npz: blocks.0.mlp.fc2.bias: missing"),
    check("array-unexpected", put(WEIGHTS, "blocks.0.attn.q.scale",
                                  value=np.ones(8, dtype=np.int32)),
          "weights.npz: blocks.0.attn.q.scale: unexpected key"),
    check("array-shape", change(WEIGHTS, "blocks.0.attn.k.weight",
                                how=lambda weight: weight[:, :7]),
          "weights.npz: blocks.0.attn.k.weight: expected shape [8, 8], got [8, 7]"),
    check("array-shape-transposed", change(WEIGHTS, "blocks.0.mlp.fc1.weight",
                                           how=lambda weight: weight.T.copy()),
          "weights.npz: blocks.0.mlp.fc1.weight: expected shape [16, 8], got [8, 16]"),
    check("array-shape-embed-bias", change(WEIGHTS, "embed.bias", how=lambda bias: bias[0]),
          "weights.npz: embed.bias: expected shape [4, 8], got [8]"),
    check("array-dtype-weight", change(WEIGHTS, "blocks.0.attn.k.weight",
                                       how=lambda weight: weight.astype(np.int32)),
          "weights.npz: blocks.0.attn.k.weight: expected dtype int8, got int32"),
    check("array-dtype-bias", change(WEIGHTS, "head.bias",
                                     how=lambda bias: bias.astype(np.int64)),
          "weights.npz: head.bias: expected dtype int32, got int64"),
    # check_arrays: values inside their widths, widths that hold their worst case
    outside_its_width("embed-bias-above-embed-current", "embed.bias", (1, 2), "embed_current"),
    outside_its_width("embed-bias-below-embed-current", "embed.bias", (3, 0), "embed_current",
                      low=True),
    outside_its_width("stream-spike-below-1", "stream_spike", (4,), "stream", low=True),
    outside_its_width("stream-spike-above-stream", "stream_spike", (0,), "stream"),
    outside_its_width("head-bias-above-logit", "head.bias", (1,), "logit"),
    outside_its_width("attn-bias-above-current", "blocks.0.attn.v.bias", (2,), "current"),
    outside_its_width("mlp-bias-below-current", "blocks.0.mlp.fc1.bias", (15,), "current",
                      low=True),
    *[below_its_worst_case(name) for name in BIT_WIDTHS[1:]],
]


@pytest.mark.parametrize(("edit", "message"), CHECKS)
def test_check_refuses_one_corrupt_field(export_dir: Path, edit: Edit, message: Message) -> None:
    expected = message if isinstance(message, str) else message(
        read_manifest(export_dir), arrays_of(export_dir))
    corrupt(export_dir, edit)
    assert refused(export_dir) == expected


def _zip_with_a_raw_member(directory: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("head.bias", b"raw bytes")
    write_weights(directory, buffer.getvalue())


def _stale_checksum(directory: Path) -> None:
    arrays = arrays_of(directory)
    arrays["head.bias"] = arrays["head.bias"] + 1
    (directory / WEIGHTS).write_bytes(npz_bytes(arrays))


def _weights_digest(directory: Path) -> str:
    return hashlib.sha256((directory / WEIGHTS).read_bytes()).hexdigest()


#: Corruptions of whole files: (corrupt the directory, the refusal made from the directory).
FILE_CHECKS = [
    pytest.param(shutil.rmtree, lambda directory: f"{directory}: no such export directory",
                 id="export-directory-missing"),
    pytest.param(lambda directory: (directory / WEIGHTS).unlink(),
                 lambda directory: f"weights.npz: missing from {directory}",
                 id="weights-file-missing"),
    pytest.param(lambda directory: (directory / MANIFEST).unlink(),
                 lambda directory: f"manifest.yaml: missing from {directory}",
                 id="manifest-file-missing"),
    pytest.param(lambda directory: (directory / MANIFEST).write_text("a: [1, 2\n"),
                 lambda directory: "manifest.yaml: not valid YAML (while parsing a flow sequence)",
                 id="manifest-not-yaml"),
    pytest.param(lambda directory: (directory / MANIFEST).write_bytes(b"name: \xff\n"),
                 lambda directory: "manifest.yaml: not valid YAML "
                 "(unacceptable character #x00ff: invalid start byte)",
                 id="manifest-not-utf8"),
    pytest.param(lambda directory: (directory / MANIFEST).write_text("[1, 2]\n"),
                 lambda directory: "manifest.yaml: expected a mapping at the top level",
                 id="manifest-not-a-mapping"),
    pytest.param(lambda directory: (directory / MANIFEST).write_text(""),
                 lambda directory: "manifest.yaml: expected a mapping at the top level",
                 id="manifest-empty"),
    pytest.param(_stale_checksum,
                 lambda directory: "manifest.yaml: weights_sha256: checksum mismatch: "
                 f"weights.npz has {_weights_digest(directory)}",
                 id="weights-checksum-mismatch"),
    pytest.param(lambda directory: write_weights(directory, b"PK\x03\x04 not a zip"),
                 lambda directory: "weights.npz: not a readable npz file (File is not a zip file)",
                 id="weights-not-a-zip"),
    pytest.param(_zip_with_a_raw_member,
                 lambda directory: "weights.npz: head.bias: not a .npy array",
                 id="weights-member-not-npy"),
]


@pytest.mark.parametrize(("corrupt_files", "message"), FILE_CHECKS)
def test_check_refuses_one_corrupt_file(export_dir: Path,
                                        corrupt_files: Callable[[Path], None],
                                        message: Callable[[Path], str]) -> None:
    corrupt_files(export_dir)
    assert refused(export_dir) == message(export_dir)


#: Edits that keep an export valid: the other side of the checks above.
VALID_EDITS = [
    pytest.param(lambda manifest, arrays: None, id="nothing"),
    pytest.param(change(WEIGHTS, "head.weight", how=lambda weight: -weight),
                 id="weights-negated"),
    pytest.param(put(MANIFEST, "neuron", "reset", value="soft"), id="soft-reset"),
    pytest.param(change(MANIFEST, "avg_timesteps", how=lambda average: average + 0.0009),
                 id="avg-timesteps-within-its-tolerance"),
    pytest.param(put(MANIFEST, "accuracy", value=dict(dataset="digits", split="test",
                                                      images=360, float=1, integer=0.0)),
                 id="accuracy-measured"),
    pytest.param(head_threshold(0), id="threshold-at-the-membrane-limit"),
]


@pytest.mark.parametrize("edit", VALID_EDITS)
def test_valid_edit_still_loads(export_dir: Path, edit: Edit) -> None:
    corrupt(export_dir, edit)
    assert load_export(export_dir).manifest == read_manifest(export_dir)


def test_attn_threshold_follows_the_attn_shift(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["neuron"]["attn_shift"] = 2
    manifest["thresholds"]["blocks.0.attn.attn"] = [4] * 8
    write_manifest(export_dir, manifest)
    assert load_export(export_dir).thresholds["blocks.0.attn.attn"].tolist() == [4] * 8


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
    assert all(not array.flags.writeable for array in export.arrays.values())


def test_budget_mask_keeps_the_first_active_steps(export_dir: Path) -> None:
    export = load_export(export_dir)
    mask = np.array([[1, 1, 1], [0, 1, 1], [1, 0, 1], [0, 0, 1]], dtype=np.uint8)
    manifest = dict(export.manifest, timestep_mask=mask.tolist())
    capped = type(export)(export.path, manifest, export.arrays)
    assert capped.budget_mask(1).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert capped.budget_mask(2).tolist() == [[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1]]
    assert capped.budget_mask(3).tolist() == mask.tolist()
    assert capped.budget_mask(None).tolist() == mask.tolist()
    with pytest.raises(StepvitError) as error:
        capped.budget_mask(0)
    assert str(error.value) == "budget 0 is outside 1..3 (this export has t_max = 3)"
    with pytest.raises(StepvitError) as error:
        capped.budget_mask(4)
    assert str(error.value) == "budget 4 is outside 1..3 (this export has t_max = 3)"


def test_config_hash_covers_the_name(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    declared = manifest["config_hash"]
    manifest["name"] = "renamed"
    write_manifest(export_dir, manifest, rehash=False)
    assert refused(export_dir) == (f"manifest.yaml: config_hash: {declared} does not match the "
                                   f"manifest (computed {config_hash_of(manifest):08x})")


def test_accuracy_is_outside_the_config_hash(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    manifest["accuracy"]["float"] = 0.5
    write_manifest(export_dir, manifest, rehash=False)
    assert load_export(export_dir).manifest["accuracy"]["float"] == 0.5


def test_config_hash_changes_with_the_weights(tmp_path: Path, random_export) -> None:
    first = load_export(random_export(tmp_path / "a", num_classes=CLASSES, seed=1))
    again = load_export(random_export(tmp_path / "b", num_classes=CLASSES, seed=1))
    other = load_export(random_export(tmp_path / "c", num_classes=CLASSES, seed=2))
    assert first.config_hash == again.config_hash
    assert first.config_hash != other.config_hash
