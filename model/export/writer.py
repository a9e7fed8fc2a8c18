"""Write an export directory (SPEC.md section 4) from integer arrays and thresholds.

The one writer behind ``stepvit export`` (a quantized trained model) and
:func:`stepvit.model.random_export.make_random_export` (random test designs). It derives the
bit widths from the worst-case bounds, refuses a design the hardware cannot hold, and reads
the result back through the validator before it returns.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stepvit.model.export import (
    MANIFEST_FILE,
    MAX_HARDWARE_BITS,
    WEIGHTS_FILE,
    array_shapes,
    bounds_by_source,
    config_hash_of,
    load_export,
    module_names_for,
    signed_bits,
    worst_case_bounds,
)
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.reader import schema_version_of

#: The accuracy section of an export that was never trained.
UNTRAINED_ACCURACY: dict[str, Any] = {
    "dataset": None, "split": None, "images": 0, "float": None, "integer": None,
}


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Return the bytes of an uncompressed ``.npz`` holding ``arrays`` in sorted key order."""
    buffer = io.BytesIO()
    np.savez(buffer, **{key: arrays[key] for key in sorted(arrays)})
    return buffer.getvalue()


def mask_summary(timestep_mask: np.ndarray, depth: int,
                 stem: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return ``timesteps_per_module``, ``timesteps_per_block`` and ``avg_timesteps``."""
    mask = np.asarray(timestep_mask, dtype=np.int64)
    names = module_names_for(depth, stem)
    per_module = {name: int(row.sum()) for name, row in zip(names, mask)}
    first = len(names) - 2 * depth - 1
    per_block = [int((mask[first + 2 * block] | mask[first + 1 + 2 * block]).sum())
                 for block in range(depth)]
    return {
        "timesteps_per_module": per_module,
        "timesteps_per_block": per_block,
        "avg_timesteps": round(float(mask.sum(axis=1).mean()), 4),
    }


def typed_arrays(architecture: dict[str, Any],
                 arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return every array the contract lists, cast to its SPEC dtype after a range check.

    Raises
    ------
    StepvitError
        If an array is missing or holds a value its dtype cannot.
    """
    typed: dict[str, np.ndarray] = {}
    for key, (_, dtype) in array_shapes(architecture).items():
        if key not in arrays:
            raise StepvitError(f"export: array {key} is missing")
        values = np.asarray(arrays[key])
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise StepvitError(
                f"export: {key} holds values in [{values.min()}, {values.max()}], "
                f"outside {dtype}"
            )
        typed[key] = values.astype(dtype)
    return typed


def bit_widths_of(manifest: dict[str, Any], typed: dict[str, np.ndarray]) -> dict[str, int]:
    """Return the ``bit_widths`` section: each class's worst-case bound as a signed width.

    Raises
    ------
    StepvitError
        If a width exceeds what the hardware holds; names the layer with the largest bound.
    """
    bounds = worst_case_bounds(manifest, typed)
    # two bits at least: a class whose values are all 0 (a module that never runs) still
    # has a register
    bit_widths = {key: max(2, signed_bits(bound)) for key, bound in bounds.items()}
    bit_widths["weight"] = 8
    too_wide = {key: bits for key, bits in bit_widths.items() if bits > MAX_HARDWARE_BITS}
    if too_wide:
        key, bits = next(iter(too_wide.items()))
        sources = bounds_by_source(manifest, typed)[key]
        culprit = max(sources, key=sources.__getitem__)
        raise StepvitError(
            f"export: {culprit}: its {key} values need {bits} bits (worst case "
            f"{bounds[key]}), more than the hardware's {MAX_HARDWARE_BITS}"
        )
    return bit_widths


def write_export(
    out_dir: str | Path,
    *,
    name: str,
    architecture: dict[str, Any],
    t_max: int,
    neuron: dict[str, Any],
    timestep_mask: np.ndarray,
    thresholds: dict[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    accuracy: dict[str, Any] | None = None,
) -> Path:
    """Write ``manifest.yaml`` and ``weights.npz`` into ``out_dir`` and validate them.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Export directory (created if needed; the two files are replaced).
    name : str
        Name of the design.
    architecture : dict
        SPEC.md section 4 ``architecture`` (``tokens`` included).
    t_max : int
        Time steps.
    neuron : dict
        ``leak_shift``, ``reset`` and ``attn_shift``.
    timestep_mask : numpy.ndarray
        0/1 ``[S + 2L + 1, T]`` in module order (``S`` stem modules, 1 without a stem).
    thresholds : dict of str to numpy.ndarray
        Integer threshold per channel of every LIF layer.
    arrays : dict of str to numpy.ndarray
        Integer weights and biases; cast to the SPEC dtypes after a range check.
    accuracy : dict, optional
        The ``accuracy`` section; an untrained design when omitted.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    StepvitError
        If a value does not fit its type or a derived width exceeds what the hardware holds.
    """
    typed = typed_arrays(architecture, arrays)
    mask = np.asarray(timestep_mask, dtype=np.int64)
    stem = architecture.get("stem")
    manifest: dict[str, Any] = {
        "schema_version": schema_version_of(architecture),
        "name": name,
        "architecture": architecture,
        "t_max": int(t_max),
        "neuron": dict(neuron),
        "modules": module_names_for(architecture["depth"], stem),
        "timestep_mask": mask.tolist(),
        **mask_summary(mask, architecture["depth"], stem),
        "thresholds": {layer: [int(v) for v in np.asarray(values).ravel()]
                       for layer, values in thresholds.items()},
    }
    manifest["bit_widths"] = bit_widths_of(manifest, typed)
    weights = npz_bytes(typed)
    manifest["accuracy"] = dict(accuracy) if accuracy is not None else dict(UNTRAINED_ACCURACY)
    manifest["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    manifest["config_hash"] = f"{config_hash_of(manifest):08x}"
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / WEIGHTS_FILE).write_bytes(weights)
    (directory / MANIFEST_FILE).write_text(
        yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=100)
    )
    load_export(directory)
    return directory
