"""Read and validate an export directory (SPEC.md section 4): numpy + pyyaml only.

:func:`load_export` checks everything (files, key sets, shapes, dtypes, value ranges,
bit widths against their worst-case bounds, the weights' checksum and the config hash)
before it returns, so an :class:`Export` is either complete and valid or not made at all.
A refusal is one :class:`~stepvit.model.export.errors.ExportError` line that names the field.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stepvit.model.export.budgets import budget_mask_of
from stepvit.model.export.errors import ExportError
from stepvit.model.export.stem import check_stem, stem_names, stem_stages, stem_tokens

SCHEMA_VERSION = 1
#: The version of an export with a convolutional stem (SPEC.md section 5).
STEM_SCHEMA_VERSION = 2
#: The versions this reader knows.
KNOWN_SCHEMA_VERSIONS = (SCHEMA_VERSION, STEM_SCHEMA_VERSION)
MANIFEST_FILE = "manifest.yaml"
WEIGHTS_FILE = "weights.npz"

#: The most bits any accumulator, membrane or logit register may have in the hardware.
MAX_HARDWARE_BITS = 32

MANIFEST_KEYS = frozenset(
    {
        "schema_version",
        "name",
        "architecture",
        "t_max",
        "neuron",
        "modules",
        "timestep_mask",
        "timesteps_per_module",
        "timesteps_per_block",
        "avg_timesteps",
        "thresholds",
        "bit_widths",
        "accuracy",
        "weights_sha256",
        "config_hash",
    }
)
ARCHITECTURE_KEYS = frozenset(
    {"image_shape", "patch", "tokens", "dim", "heads", "depth", "mlp_dim", "num_classes",
     "class_names"}
)
NEURON_KEYS = frozenset({"leak_shift", "reset", "attn_shift"})
RESET_RULES = ("hard", "soft")
BIT_WIDTH_KEYS = (
    "weight", "embed_current", "stream", "current", "attention", "membrane", "logit",
)
ACCURACY_KEYS = frozenset({"dataset", "split", "images", "float", "integer"})
#: LIF layers of a block's attention module and of its MLP module, in SPEC.md section 1
#: order: the one list the float network, the golden model and the export share.
ATTENTION_LAYERS = ("in", "q", "k", "v", "attn")
MLP_LAYERS = ("in", "fc1")
#: LIF layers of one block, in SPEC.md section 1 order.
BLOCK_LAYERS = (*(f"attn.{name}" for name in ATTENTION_LAYERS),
                *(f"mlp.{name}" for name in MLP_LAYERS))


def module_names_for(depth: int, stem: dict[str, Any] | None = None) -> list[str]:
    """Return the module names, in mask-row order, of a network of ``depth`` blocks.

    ``stem``: the architecture's convolutional stem (its stages ``stem.i`` and ``stem.rpe``
    take the place of ``embed``), or None for the linear patch embedding.
    """
    names = stem_names(stem)
    for block in range(depth):
        names += [f"blocks.{block}.attn", f"blocks.{block}.mlp"]
    return names + ["head"]


def layer_names_for(depth: int, stem: dict[str, Any] | None = None) -> list[str]:
    """Return the LIF layer names, in SPEC.md section 1 spike-count order (``stem`` as above)."""
    names = stem_names(stem)
    for block in range(depth):
        names += [f"blocks.{block}.{layer}" for layer in BLOCK_LAYERS]
    return names + ["head.in"]


def array_shapes(arch: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Return ``key -> (shape, dtype)`` of every array ``weights.npz`` must hold."""
    dim, mlp_dim, tokens = arch["dim"], arch["mlp_dim"], arch["tokens"]
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    if arch.get("stem"):
        for stage in stem_stages(arch["image_shape"], arch["stem"]):
            shapes[f"{stage.name}.weight"] = (stage.weight_shape, "int8")
            shapes[f"{stage.name}.bias"] = ((stage.conv_shape[0],), "int32")
    else:
        patch_len = arch["image_shape"][0] * arch["patch"] ** 2
        shapes["embed.weight"] = ((dim, patch_len), "int8")
        shapes["embed.bias"] = ((tokens, dim), "int32")
    shapes["stream_spike"] = ((dim,), "int32")
    for block in range(arch["depth"]):
        for name in ("q", "k", "v", "proj"):
            shapes[f"blocks.{block}.attn.{name}.weight"] = ((dim, dim), "int8")
            shapes[f"blocks.{block}.attn.{name}.bias"] = ((dim,), "int32")
        shapes[f"blocks.{block}.mlp.fc1.weight"] = ((mlp_dim, dim), "int8")
        shapes[f"blocks.{block}.mlp.fc1.bias"] = ((mlp_dim,), "int32")
        shapes[f"blocks.{block}.mlp.fc2.weight"] = ((dim, mlp_dim), "int8")
        shapes[f"blocks.{block}.mlp.fc2.bias"] = ((dim,), "int32")
    shapes["head.weight"] = ((arch["num_classes"], dim), "int8")
    shapes["head.bias"] = ((arch["num_classes"],), "int32")
    return shapes


def threshold_widths(arch: dict[str, Any]) -> dict[str, int]:
    """Return ``layer name -> number of channels`` of every threshold list."""
    widths = {stage.name: stage.conv_shape[0]
              for stage in stem_stages(arch["image_shape"], arch["stem"])} \
        if arch.get("stem") else {}
    for name in layer_names_for(arch["depth"], arch.get("stem")):
        if name not in widths:
            widths[name] = arch["mlp_dim"] if name.endswith("mlp.fc1") else arch["dim"]
    return widths


def schema_version_of(arch: dict[str, Any]) -> int:
    """Return the schema version an export of ``arch`` has: 2 with a stem, else 1."""
    return STEM_SCHEMA_VERSION if arch.get("stem") else SCHEMA_VERSION


def config_hash_of(manifest: dict[str, Any]) -> int:
    """Return the 32-bit config hash of ``manifest``.

    It is the first 32 bits of the sha256 of the canonical JSON (sorted keys, no spaces)
    of every manifest field but ``accuracy`` and ``config_hash``; since it covers
    ``weights_sha256``, it changes with any weight. The writer and the reader both use
    this one function, and the accelerator exposes the value in its ``CONFIG_HASH``
    register.
    """
    hashed = {key: value for key, value in manifest.items()
              if key not in ("accuracy", "config_hash")}
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return int(hashlib.sha256(canonical.encode()).hexdigest()[:8], 16)


#: The manifest fields a design that loads its parameters from DDR depends on (SPEC.md
#: section 4, ``shape_hash``): the architecture less its ``class_names``, the neuron's rules
#: less ``attn_shift`` (it reaches the hardware only as the thresholds of ``attn.attn``).
#: The ``bit_widths`` are not among them: a design's widths are a separate record, and it
#: serves every export whose widths fit in them (:func:`widths_fit`).
SHAPE_FIELDS = ("schema_version", "architecture", "t_max", "neuron", "modules")
#: Fields of ``architecture`` and ``neuron`` left out of the shape (values, not shape).
SHAPE_EXCLUDED = {"architecture": ("class_names",), "neuron": ("attn_shift",)}


def shape_hash_of(manifest: dict[str, Any]) -> int:
    """Return the 32-bit shape hash of ``manifest``: what one ``weights="ddr"`` design serves.

    It is the first 32 bits of the sha256 of the canonical JSON (sorted keys, no spaces) of
    the fields :data:`SHAPE_FIELDS` (``architecture`` without ``class_names``, ``neuron``
    without ``attn_shift``). It leaves out everything a weight image carries or the host
    writes: ``name``, the trained mask and its summaries, ``thresholds``, ``accuracy``,
    ``weights_sha256`` and ``config_hash``; and the ``bit_widths``, which a design takes
    with a margin (:func:`design_widths`) and checks apart (:func:`widths_fit`). Two exports
    with one shape hash have the same ``weights="ddr"`` accelerator at the same widths, byte
    for byte; its ``CONFIG_HASH`` register holds the hash.
    """
    hashed = {}
    for key in SHAPE_FIELDS:
        value = manifest[key]
        if key in SHAPE_EXCLUDED:
            value = {k: v for k, v in value.items() if k not in SHAPE_EXCLUDED[key]}
        hashed[key] = value
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return int(hashlib.sha256(canonical.encode()).hexdigest()[:8], 16)


def design_widths(export_widths: dict[str, int], margin: int = 0) -> dict[str, int]:
    """Return a design's datapath widths: every width but ``weight`` ``margin`` bits wider.

    A datapath wider than an export's proven widths computes the same integers (the bounds
    are proven, nothing wraps), so a design built with a margin serves the exports of its
    shape whose widths exceed the one it was built from by up to ``margin`` bits.

    Raises
    ------
    ValueError
        For a negative margin, or a width beyond :data:`MAX_HARDWARE_BITS`.
    """
    if not isinstance(margin, int) or isinstance(margin, bool) or margin < 0:
        raise ValueError(f"the width margin must be a non-negative integer, not {margin!r}")
    widths = {key: int(value) + (0 if key == "weight" else margin)
              for key, value in export_widths.items()}
    wide = [f"{key} {value}" for key, value in widths.items() if value > MAX_HARDWARE_BITS]
    if wide:
        raise ValueError(f"a width margin of {margin} makes {', '.join(wide)} bits, beyond "
                         f"the hardware's {MAX_HARDWARE_BITS}")
    return widths


def widths_fit(export_widths: dict[str, int], design_widths: dict[str, int]) -> list[str]:
    """Return the widths ``export_widths`` needs beyond ``design_widths``, as ``"key a > b"``.

    Empty: the design's datapath holds every value of the export (SPEC.md section 4). A
    width the design does not record counts as not fitting.
    """
    return [f"{key} {value} > {design_widths.get(key, 0)}"
            for key, value in export_widths.items()
            if int(value) > int(design_widths.get(key, 0))]


def signed_bits(bound: int) -> int:
    """Return the fewest bits of a signed integer that holds every value in ``[-bound, bound]``."""
    return int(bound).bit_length() + 1


def _abs_row_sums(weight: np.ndarray) -> np.ndarray:
    return np.abs(weight.astype(np.int64)).sum(axis=1)


def bounds_by_source(manifest: dict[str, Any],
                     arrays: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Return, per bit-width class, the worst-case magnitude that each layer contributes.

    :func:`worst_case_bounds` is the maximum of each class; the export writer uses the
    sources to name the layer that makes a width too large. The proofs, with
    ``T = t_max`` and every LIF input binary except the embedding's:

    - ``embed_current``: ``|I[n, o]| <= 255 * sum_k |W[o, k]| + |B[n, o]|``.
    - ``current`` (any linear layer on spikes, bias included):
      ``|I_o| <= sum_j |W[o, j]| + |b_o|``.
    - ``stream``: the stream is rebuilt at every step from ``E * S_embed`` and every
      writer (``proj``, ``fc2`` of each block) adds at most once, so
      ``|X_c| <= E_c + sum over writers of (sum_j |W[c, j]| + |b_c|)``; with a stem's RPE a
      token is up to two spikes, ``2 E_c`` (SPEC.md section 5).
    - A stem (SPEC.md section 5): stage 0's current is ``embed_current``,
      ``255 * sum |W_0[o]| + |B_0[o]|`` (a max-pool only picks one of them); every other
      stem conv is a ``current``, ``sum |W[o]| + |B[o]|``.
    - ``attention``: ``KV[h, i, j] <= N`` and ``Y[n, h, j] = sum_i Q * KV <= N * d``.
    - ``membrane``: ``|V - (V >> k)| <= |V|`` for every ``k >= 0`` and a reset never
      increases ``|V|``, so ``|H_t| <= |V_{t-1}| + |I_t| <= T * max|I|`` of the layer;
      it must also hold every threshold.
    - ``logit``: a head count is at most ``N * T``, so
      ``|logit_k| <= N * T * sum_c |W[k, c]| + |b_k|``.
    - ``weight``: int8.

    Parameters
    ----------
    manifest : dict
        The manifest (its architecture, ``t_max`` and thresholds are read).
    arrays : dict of numpy.ndarray
        The integer arrays of ``weights.npz``.

    Returns
    -------
    dict of str to dict of str to int
        Bit-width class -> source (a layer, or ``thresholds``) -> bound.
    """
    arch = manifest["architecture"]
    t_max = manifest["t_max"]
    depth, tokens = arch["depth"], arch["tokens"]
    head_dim = arch["dim"] // arch["heads"]
    stem = arch.get("stem")
    embed_bound, currents = _first_layer_bounds(stem, arrays)
    # a token is S_last + S_rpe: up to two stream spikes with the RPE
    token_spikes = 2 if stem and stem["rpe"] else 1
    stream_per_channel = token_spikes * arrays["stream_spike"].astype(np.int64)
    for block in range(depth):
        for name in ("attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc1", "mlp.fc2"):
            prefix = f"blocks.{block}.{name}"
            per_output = _abs_row_sums(arrays[f"{prefix}.weight"]) + np.abs(
                arrays[f"{prefix}.bias"].astype(np.int64)
            )
            currents[prefix] = int(per_output.max())
            if name in ("attn.proj", "mlp.fc2"):
                stream_per_channel += per_output
    stream_bound = int(stream_per_channel.max())
    attention_bound = tokens * head_dim
    threshold_max = max(max(values) for values in manifest["thresholds"].values())
    first_name = stem_names(stem)[0]
    membrane = {first_name: t_max * embed_bound, "stream": t_max * stream_bound,
                "attention": t_max * attention_bound, "thresholds": threshold_max}
    membrane.update({name: t_max * bound for name, bound in currents.items()})
    logit_bound = int(
        (tokens * t_max * _abs_row_sums(arrays["head.weight"])
         + np.abs(arrays["head.bias"].astype(np.int64))).max()
    )
    return {
        "weight": {"weights": 127},
        "embed_current": {first_name: embed_bound},
        "stream": {"stream": stream_bound},
        "current": currents or {"none": 0},
        "attention": {"attention": attention_bound},
        "membrane": membrane,
        "logit": {"head": logit_bound},
    }


def _first_layer_bounds(stem: dict[str, Any] | None,
                        arrays: dict[str, np.ndarray]) -> tuple[int, dict[str, int]]:
    """Return the bound of the first layer's current and those of the stem's other convs.

    The first layer sees pixels (``255 * sum |W| + |B|``): the patch embedding, or the stem's
    stage 0; every other stem module sees spikes (``sum |W| + |B|``).
    """
    if not stem:
        return int((255 * _abs_row_sums(arrays["embed.weight"])[None, :]
                     + np.abs(arrays["embed.bias"].astype(np.int64))).max()), {}

    def per_channel(name: str, scale: int) -> np.ndarray:
        weight = arrays[f"{name}.weight"]
        return scale * _abs_row_sums(weight.reshape(weight.shape[0], -1)) + np.abs(
            arrays[f"{name}.bias"].astype(np.int64))

    names = stem_names(stem)
    currents = {name: int(per_channel(name, 1).max()) for name in names[1:]}
    return int(per_channel(names[0], 255).max()), currents


def worst_case_bounds(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, int]:
    """Return the largest magnitude each bit-width class can reach, for any input image.

    The maximum over the sources of :func:`bounds_by_source` (where the proofs are).

    Returns
    -------
    dict of str to int
        Bound per key of ``bit_widths``.
    """
    return {key: max(sources.values())
            for key, sources in bounds_by_source(manifest, arrays).items()}


@dataclass(frozen=True, eq=False)
class Export:
    """A validated export directory.

    Attributes
    ----------
    path : pathlib.Path
        The export directory.
    manifest : dict
        ``manifest.yaml`` as loaded.
    arrays : dict of str to numpy.ndarray
        The arrays of ``weights.npz`` (int8 weights, int32 the rest).
    """

    path: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def arch(self) -> dict[str, Any]:
        """The ``architecture`` section."""
        return self.manifest["architecture"]

    @property
    def t_max(self) -> int:
        """Time steps of the design."""
        return int(self.manifest["t_max"])

    @property
    def module_names(self) -> list[str]:
        """Module names in mask-row order."""
        return list(self.manifest["modules"])

    @property
    def timestep_mask(self) -> np.ndarray:
        """The trained mask, ``np.uint8 [2L + 2, T]``."""
        return np.asarray(self.manifest["timestep_mask"], dtype=np.uint8)

    @property
    def thresholds(self) -> dict[str, np.ndarray]:
        """Integer thresholds per LIF layer (``np.int64`` per channel)."""
        return {name: np.asarray(values, dtype=np.int64)
                for name, values in self.manifest["thresholds"].items()}

    @property
    def bit_widths(self) -> dict[str, int]:
        """Signed bit width per value class (SPEC.md section 4)."""
        return dict(self.manifest["bit_widths"])

    @property
    def neuron(self) -> dict[str, Any]:
        """The ``neuron`` section: ``leak_shift``, ``reset``, ``attn_shift``."""
        return dict(self.manifest["neuron"])

    @property
    def config_hash(self) -> int:
        """The 32-bit config hash."""
        return int(self.manifest["config_hash"], 16)

    def at_widths(self, widths: dict[str, int] | None) -> Export:
        """Return this export seen at a design's ``widths`` (``None``: itself).

        The copy's ``bit_widths`` are ``widths``, which must fit the export's
        (:func:`widths_fit`): what a design's plan, datapath and image are built from.

        Raises
        ------
        ValueError
            If a width of the export does not fit in ``widths``.
        """
        if widths is None or dict(widths) == self.bit_widths:
            return self
        beyond = widths_fit(self.bit_widths, widths)
        if beyond or set(widths) != set(self.bit_widths):
            raise ValueError(f"export {self.path}'s widths do not fit the design's: "
                             f"{', '.join(beyond) or sorted(widths)}")
        return replace(self, manifest={**self.manifest, "bit_widths": dict(widths)})

    @property
    def shape_hash(self) -> int:
        """The 32-bit shape hash (:func:`shape_hash_of`): one ``weights="ddr"`` design's."""
        return shape_hash_of(self.manifest)

    def layer_names(self) -> list[str]:
        """LIF layer names in SPEC.md section 1 spike-count order."""
        return layer_names_for(self.arch["depth"], self.arch.get("stem"))

    @property
    def schema_version(self) -> int:
        """1 for the linear patch embedding, 2 with a convolutional stem."""
        return int(self.manifest["schema_version"])

    def budget_mask(self, budget: int | None) -> np.ndarray:
        """Return the trained mask capped to the first ``budget`` active steps per module."""
        return budget_mask_of(self.timestep_mask, budget, self.stem_modules)

    @property
    def stem_modules(self) -> int:
        """Mask rows of the convolutional stem (SPEC.md section 5); 0 without one."""
        stem = self.arch.get("stem")
        return len(stem_names(stem)) if stem else 0


def _fail(where: str, message: str) -> ExportError:
    return ExportError(f"{where}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_keys(section: Any, expected: frozenset[str] | tuple[str, ...], where: str) -> None:
    if not isinstance(section, dict):
        raise _fail(where, f"expected a mapping, got {type(section).__name__}")
    missing = sorted(set(expected) - set(section))
    if missing:
        raise _fail(f"{where}.{missing[0]}" if where != MANIFEST_FILE
                    else f"{where}: {missing[0]}", "missing")
    extra = sorted(set(section) - set(expected), key=str)
    if extra:
        raise _fail(f"{where}.{extra[0]}" if where != MANIFEST_FILE
                    else f"{where}: {extra[0]}", "unexpected key")


def _require_int(value: Any, where: str, minimum: int | None = None,
                 maximum: int | None = None) -> int:
    if not _is_int(value):
        raise _fail(where, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise _fail(where, f"expected at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise _fail(where, f"expected at most {maximum}, got {value}")
    return value


def _check_architecture(arch: Any, version: int) -> None:
    where = f"{MANIFEST_FILE}: architecture"
    stem = version == STEM_SCHEMA_VERSION
    _require_keys(arch, ARCHITECTURE_KEYS | {"stem"} if stem else ARCHITECTURE_KEYS, where)
    shape = arch["image_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) and v >= 1
                                                               for v in shape)):
        raise _fail(f"{where}.image_shape",
                    f"expected 3 positive integers [C, H, W], got {shape!r}")
    for key in ("dim", "heads", "depth", "mlp_dim", "num_classes", "tokens"):
        _require_int(arch[key], f"{where}.{key}", minimum=1)
    if stem:
        tokens, what = _check_stem_architecture(arch, where), "stem"
    else:
        _require_int(arch["patch"], f"{where}.patch", minimum=1)
        _, height, width = shape
        patch = arch["patch"]
        if height % patch or width % patch:
            raise _fail(f"{where}.patch", f"{patch} does not divide the image {height}x{width}")
        tokens, what = (height // patch) * (width // patch), "patch"
    if arch["tokens"] != tokens:
        raise _fail(f"{where}.tokens", f"expected {tokens} for this image and {what}, "
                    f"got {arch['tokens']}")
    if arch["dim"] % arch["heads"]:
        raise _fail(f"{where}.heads", f"{arch['heads']} does not divide dim {arch['dim']}")
    names = arch["class_names"]
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        raise _fail(f"{where}.class_names", "expected a list of strings")
    if len(names) != arch["num_classes"]:
        raise _fail(f"{where}.class_names",
                    f"expected {arch['num_classes']} names, got {len(names)}")


def _check_stem_architecture(arch: dict[str, Any], where: str) -> int:
    """Check a schema-2 architecture's stem; return its token count."""
    if arch["patch"] is not None:
        raise _fail(f"{where}.patch", f"expected null with a stem, got {arch['patch']!r}")
    problem = check_stem(arch["stem"], arch["image_shape"], f"{where}.stem")
    if problem:
        raise ExportError(problem)
    tokens, channels = stem_tokens(arch["image_shape"], arch["stem"])
    if channels != arch["dim"]:
        raise _fail(f"{where}.stem", f"the last stage has {channels} channels, dim is "
                    f"{arch['dim']}")
    return tokens


def _check_neuron(neuron: Any) -> None:
    where = f"{MANIFEST_FILE}: neuron"
    _require_keys(neuron, NEURON_KEYS, where)
    _require_int(neuron["leak_shift"], f"{where}.leak_shift", minimum=0, maximum=31)
    _require_int(neuron["attn_shift"], f"{where}.attn_shift", minimum=0, maximum=30)
    if neuron["reset"] not in RESET_RULES:
        raise _fail(f"{where}.reset", f"expected one of {', '.join(RESET_RULES)}, "
                    f"got {neuron['reset']!r}")


def _check_masks(manifest: dict[str, Any]) -> None:
    arch = manifest["architecture"]
    t_max = manifest["t_max"]
    modules = module_names_for(arch["depth"], arch.get("stem"))
    if manifest["modules"] != modules:
        raise _fail(f"{MANIFEST_FILE}: modules", f"expected {modules}, got {manifest['modules']}")
    mask = manifest["timestep_mask"]
    where = f"{MANIFEST_FILE}: timestep_mask"
    if not (isinstance(mask, list) and len(mask) == len(modules)):
        raise _fail(where, f"expected {len(modules)} rows, got "
                    f"{len(mask) if isinstance(mask, list) else type(mask).__name__}")
    for row_index, row in enumerate(mask):
        if not (isinstance(row, list) and len(row) == t_max):
            raise _fail(f"{where}.{row_index}", f"expected {t_max} values")
        if any(not _is_int(bit) or bit not in (0, 1) for bit in row):
            raise _fail(f"{where}.{row_index}", f"expected 0/1 values, got {row}")
    per_module = {name: sum(row) for name, row in zip(modules, mask)}
    where = f"{MANIFEST_FILE}: timesteps_per_module"
    _require_keys(manifest["timesteps_per_module"], frozenset(modules), where)
    for name, count in per_module.items():
        if manifest["timesteps_per_module"][name] != count:
            raise _fail(f"{where}.{name}", f"the mask has {count} active steps, "
                        f"got {manifest['timesteps_per_module'][name]!r}")
    first = len(modules) - 2 * arch["depth"] - 1
    per_block = [
        sum(1 for attn, mlp in zip(mask[first + 2 * block], mask[first + 1 + 2 * block])
            if attn or mlp)
        for block in range(arch["depth"])
    ]
    if manifest["timesteps_per_block"] != per_block:
        raise _fail(f"{MANIFEST_FILE}: timesteps_per_block",
                    f"the mask gives {per_block}, got {manifest['timesteps_per_block']!r}")
    average = sum(per_module.values()) / len(modules)
    declared = manifest["avg_timesteps"]
    if not isinstance(declared, (int, float)) or isinstance(declared, bool) or not abs(
        declared - average
    ) <= 1e-3:  # written so that NaN is refused too
        raise _fail(f"{MANIFEST_FILE}: avg_timesteps",
                    f"the mask gives {average:.4f}, got {declared!r}")


def _check_bit_widths(widths: Any) -> None:
    where = f"{MANIFEST_FILE}: bit_widths"
    _require_keys(widths, frozenset(BIT_WIDTH_KEYS), where)
    for key in BIT_WIDTH_KEYS:
        _require_int(widths[key], f"{where}.{key}", minimum=2, maximum=MAX_HARDWARE_BITS)
    if widths["weight"] != 8:
        raise _fail(f"{where}.weight", f"expected 8 (int8 weights), got {widths['weight']}")


def _check_thresholds(manifest: dict[str, Any]) -> None:
    arch = manifest["architecture"]
    where = f"{MANIFEST_FILE}: thresholds"
    expected = threshold_widths(arch)
    _require_keys(manifest["thresholds"], frozenset(expected), where)
    limit = 2 ** (manifest["bit_widths"]["membrane"] - 1) - 1
    attn_threshold = 2 ** manifest["neuron"]["attn_shift"]
    for name, width in expected.items():
        values = manifest["thresholds"][name]
        field_name = f"{where}.{name}"
        if not isinstance(values, list) or len(values) != width:
            count = len(values) if isinstance(values, list) else type(values).__name__
            raise _fail(field_name, f"expected {width} values, got {count}")
        for channel, value in enumerate(values):
            _require_int(value, f"{field_name}.{channel}", minimum=1, maximum=limit)
        if name.endswith("attn.attn") and any(value != attn_threshold for value in values):
            raise _fail(field_name, f"expected every value = 2**attn_shift = {attn_threshold}")


def _check_accuracy(accuracy: Any) -> None:
    where = f"{MANIFEST_FILE}: accuracy"
    _require_keys(accuracy, ACCURACY_KEYS, where)
    for key in ("dataset", "split"):
        if accuracy[key] is not None and not isinstance(accuracy[key], str):
            raise _fail(f"{where}.{key}", f"expected a string or null, got {accuracy[key]!r}")
    _require_int(accuracy["images"], f"{where}.images", minimum=0)
    for key in ("float", "integer"):
        value = accuracy[key]
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise _fail(f"{where}.{key}", f"expected a fraction in [0, 1] or null, got {value!r}")


def check_manifest(manifest: Any) -> None:
    """Check every manifest field that does not need the arrays.

    Raises
    ------
    ExportError
        On the first bad field, named in the message.
    """
    if not isinstance(manifest, dict):
        raise _fail(MANIFEST_FILE, "expected a mapping at the top level")
    if "schema_version" in manifest and (
            not _is_int(manifest["schema_version"])
            or manifest["schema_version"] not in KNOWN_SCHEMA_VERSIONS):
        known = " and ".join(str(version) for version in KNOWN_SCHEMA_VERSIONS)
        raise _fail(f"{MANIFEST_FILE}: schema_version",
                    f"unknown version {manifest['schema_version']!r} (this reader knows "
                    f"{known}: a newer stepvit wrote it?)")
    _require_keys(manifest, MANIFEST_KEYS, MANIFEST_FILE)
    if not isinstance(manifest["name"], str) or not manifest["name"]:
        raise _fail(f"{MANIFEST_FILE}: name", "expected a non-empty string")
    _check_architecture(manifest["architecture"], manifest["schema_version"])
    _require_int(manifest["t_max"], f"{MANIFEST_FILE}: t_max", minimum=1, maximum=32)
    _check_neuron(manifest["neuron"])
    _check_masks(manifest)
    _check_bit_widths(manifest["bit_widths"])
    _check_thresholds(manifest)
    _check_accuracy(manifest["accuracy"])
    if not (isinstance(manifest["weights_sha256"], str)
            and re.fullmatch(r"[0-9a-f]{64}", manifest["weights_sha256"])):
        raise _fail(f"{MANIFEST_FILE}: weights_sha256", "expected 64 lowercase hex digits")
    declared = manifest["config_hash"]
    if not (isinstance(declared, str) and re.fullmatch(r"[0-9a-f]{8}", declared)):
        raise _fail(f"{MANIFEST_FILE}: config_hash",
                    f"expected 8 lowercase hex digits (a quoted string), got {declared!r}")
    computed = f"{config_hash_of(manifest):08x}"
    if declared != computed:
        raise _fail(f"{MANIFEST_FILE}: config_hash",
                    f"{declared} does not match the manifest (computed {computed})")


def check_arrays(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Check the key set, shapes, dtypes and value ranges of ``weights.npz``.

    Also checks that each declared bit width holds its worst-case bound
    (:func:`worst_case_bounds`). ``manifest`` must have passed :func:`check_manifest`.

    Raises
    ------
    ExportError
        On the first bad array, named in the message.
    """
    expected = array_shapes(manifest["architecture"])
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise _fail(f"{WEIGHTS_FILE}: {missing[0]}", "missing")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise _fail(f"{WEIGHTS_FILE}: {extra[0]}", "unexpected key")
    for key, (shape, dtype) in expected.items():
        array = arrays[key]
        if array.shape != shape:
            raise _fail(f"{WEIGHTS_FILE}: {key}",
                        f"expected shape {list(shape)}, got {list(array.shape)}")
        if array.dtype != np.dtype(dtype):
            raise _fail(f"{WEIGHTS_FILE}: {key}", f"expected dtype {dtype}, got {array.dtype}")
    widths = manifest["bit_widths"]

    def check_fits(key: str, width_name: str, minimum: int | None = None) -> None:
        limit = 2 ** (widths[width_name] - 1)
        values = arrays[key].astype(np.int64)
        low = -limit if minimum is None else minimum
        bad = np.flatnonzero((values.ravel() < low) | (values.ravel() > limit - 1))
        if bad.size:
            index = np.unravel_index(bad[0], values.shape)
            raise _fail(f"{WEIGHTS_FILE}: {key}",
                        f"value {values[index]} at {list(map(int, index))} is outside "
                        f"[{low}, {limit - 1}] (bit_widths.{width_name} = {widths[width_name]})")

    stem = manifest["architecture"].get("stem")
    first = stem_names(stem)[0]
    check_fits(f"{first}.bias" if stem else "embed.bias", "embed_current")
    check_fits("stream_spike", "stream", minimum=1)
    check_fits("head.bias", "logit")
    for key in expected:
        if (key.startswith("blocks.") or (key.startswith("stem.")
                                          and not key.startswith(f"{first}."))) \
                and key.endswith(".bias"):
            check_fits(key, "current")
    bounds = worst_case_bounds(manifest, arrays)
    for name, bound in bounds.items():
        needed = signed_bits(bound)
        if widths[name] < needed:
            raise _fail(f"{MANIFEST_FILE}: bit_widths.{name}",
                        f"{widths[name]} bits cannot hold the worst case {bound} "
                        f"(needs {needed})")


def _read_npz(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise _fail(WEIGHTS_FILE, f"not a readable npz file ({error})") from None
    # np.load returns the raw bytes of a member that is not a .npy file.
    not_arrays = sorted(key for key, value in arrays.items() if not isinstance(value, np.ndarray))
    if not_arrays:
        raise _fail(f"{WEIGHTS_FILE}: {not_arrays[0]}", "not a .npy array")
    return arrays


def load_export(path: str | Path) -> Export:
    """Load and validate the export directory at ``path``.

    Parameters
    ----------
    path : str or pathlib.Path
        Directory holding ``manifest.yaml`` and ``weights.npz``.

    Returns
    -------
    Export
        The validated export.

    Raises
    ------
    ExportError
        If anything is missing or wrong; the message names the file and field.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ExportError(f"{directory}: no such export directory")
    manifest_path = directory / MANIFEST_FILE
    weights_path = directory / WEIGHTS_FILE
    for required in (manifest_path, weights_path):
        if not required.is_file():
            raise ExportError(f"{required.name}: missing from {directory}")
    try:
        manifest = yaml.safe_load(manifest_path.read_bytes())  # bad bytes: a YAMLError
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _fail(MANIFEST_FILE, f"not valid YAML ({first_line})") from None
    check_manifest(manifest)
    weights_bytes = weights_path.read_bytes()
    digest = hashlib.sha256(weights_bytes).hexdigest()
    if digest != manifest["weights_sha256"]:
        raise _fail(f"{MANIFEST_FILE}: weights_sha256",
                    f"checksum mismatch: {WEIGHTS_FILE} has {digest}")
    arrays = _read_npz(weights_bytes)
    check_arrays(manifest, arrays)
    for array in arrays.values():
        array.setflags(write=False)
    return Export(path=directory, manifest=manifest, arrays=arrays)
