"""Valid exports with random integer weights, for the RTL and simulation tests.

The weights are uniform int8 in ``[-weight_range, weight_range]``; biases centre each
current near zero and thresholds sit at about one standard deviation of the current
(estimated from the weights and an assumed input spike rate; a stem is calibrated on random
images instead), so that with random images every layer spikes, without saturating. The
masks are random with at least one active step per module (and one step where every stem
module is active, so that the image reaches the tokens), unless given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stepvit.model.export import module_names_for
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.stem import complete_stem, stem_stages, stem_tokens
from stepvit.model.export.writer import write_export
from stepvit.model.golden import conv2d_int, max_pool_int

#: Spike rate assumed when the biases and thresholds are set.
ASSUMED_SPIKE_RATE = 0.25
#: Spike rate of the layers after a thresholded linear layer (q, k, v, head input).
DEEP_SPIKE_RATE = 0.15
#: Share of a stem module's currents at or above its threshold on random images.
STEM_SPIKE_RATE = 0.2
#: Random images a stem is calibrated on.
STEM_CALIBRATION_IMAGES = 4
#: Mean and variance of a uniform random pixel in 0..255.
PIXEL_MEAN = 127.5
PIXEL_VARIANCE = (256**2 - 1) / 12


def random_mask(rng: np.random.Generator, modules: int, t_max: int) -> np.ndarray:
    """Return a random 0/1 mask ``[modules, t_max]`` with at least one active step per row."""
    mask = (rng.random((modules, t_max)) < 0.6).astype(np.int64)
    empty = mask.sum(axis=1) == 0
    mask[empty, rng.integers(0, t_max, size=int(empty.sum()))] = 1
    return mask


def _centred_layer(
    rng: np.random.Generator, out_features: int, in_features: int, weight_range: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return a weight, a bias centring its current at the assumed rate, and thresholds."""
    weight = rng.integers(-weight_range, weight_range + 1, size=(out_features, in_features))
    bias = -np.round(ASSUMED_SPIKE_RATE * weight.sum(axis=1)).astype(np.int64)
    spread = np.sqrt(ASSUMED_SPIKE_RATE * (weight.astype(np.float64) ** 2).sum(axis=1))
    return weight, bias, np.maximum(1, np.round(spread)).astype(np.int64)


def default_attn_shift(tokens: int, dim: int, heads: int) -> int:
    """Return the shift that puts ``2**attn_shift`` near twice the typical ``Y = N·d·rate³``.

    So that the attention layer neither stays silent nor saturates.
    """
    typical_attention = tokens * (dim // heads) * DEEP_SPIKE_RATE**3
    return max(0, int(np.round(np.log2(typical_attention))) + 1)


def random_embedding(rng: np.random.Generator, arrays: dict[str, np.ndarray],
                     thresholds: dict[str, np.ndarray], *, patch_len: int, tokens: int,
                     dim: int, weight_range: int) -> np.ndarray:
    """Add the embedding and ``stream_spike``; return the stream's variance per channel."""
    weight = rng.integers(-weight_range, weight_range + 1, size=(dim, patch_len))
    spread = np.sqrt(PIXEL_VARIANCE * (weight.astype(np.float64) ** 2).sum(axis=1))
    centre = -np.round(PIXEL_MEAN * weight.sum(axis=1)).astype(np.int64)
    position = rng.integers(-1, 2, size=(tokens, dim)) * np.round(spread / 4).astype(np.int64)
    arrays["embed.weight"] = weight
    arrays["embed.bias"] = centre[None, :] + position
    thresholds["embed"] = np.maximum(1, np.round(spread)).astype(np.int64)
    stream_spike = rng.integers(weight_range, 3 * weight_range + 1, size=dim)
    arrays["stream_spike"] = stream_spike
    return ASSUMED_SPIKE_RATE * stream_spike.astype(np.float64) ** 2


def random_stem(rng: np.random.Generator, arrays: dict[str, np.ndarray],
                thresholds: dict[str, np.ndarray], *, image_shape: Sequence[int],
                stem: dict, weight_range: int) -> np.ndarray:
    """Add the stem's stages, RPE and ``stream_spike``; return the stream's variance.

    Each module is calibrated on :data:`STEM_CALIBRATION_IMAGES` uniform random images, in
    order, from the spikes the module before it fires at the first step: its threshold is
    the spread of its current over positions and images, per channel, and its bias puts
    :data:`STEM_SPIKE_RATE` of them at or above it, so every stage spikes and its spikes
    depend on the image.
    """
    pool = stem["pool"]
    inputs = torch.from_numpy(rng.integers(0, 256, size=(STEM_CALIBRATION_IMAGES,
                                                         *image_shape)))
    tokens = None
    for stage in stem_stages(image_shape, stem):
        weight = rng.integers(-weight_range, weight_range + 1, size=stage.weight_shape)
        stage_inputs = tokens if stage.name == "stem.rpe" else inputs
        current = conv2d_int(stage_inputs, torch.from_numpy(weight), None, stride=stage.stride,
                             padding=stage.padding)
        if stage.pool == "before":
            current = max_pool_int(current, **pool)
        per_channel = current.transpose(0, 1).flatten(1).double()
        threshold = np.maximum(1, np.round(per_channel.std(dim=1).numpy())).astype(np.int64)
        level = torch.quantile(per_channel, 1 - STEM_SPIKE_RATE, dim=1).numpy()
        bias = np.round(threshold - level).astype(np.int64)
        arrays[f"{stage.name}.weight"] = weight
        arrays[f"{stage.name}.bias"] = bias
        thresholds[stage.name] = threshold
        fired = (current + torch.from_numpy(bias - threshold).view(1, -1, 1, 1) >= 0).long()
        spikes = max_pool_int(fired, **pool) if stage.pool == "after" else fired
        if stage.name != "stem.rpe":
            inputs = tokens = spikes
    dim = stem["stages"][-1]["channels"]
    stream_spike = rng.integers(weight_range, 3 * weight_range + 1, size=dim)
    arrays["stream_spike"] = stream_spike
    token_spikes = 2 if stem["rpe"] else 1
    return token_spikes * ASSUMED_SPIKE_RATE * stream_spike.astype(np.float64) ** 2


def random_block(rng: np.random.Generator, arrays: dict[str, np.ndarray],
                 thresholds: dict[str, np.ndarray], prefix: str, stream_variance: np.ndarray,
                 *, dim: int, mlp_dim: int, attn_shift: int, weight_range: int) -> np.ndarray:
    """Add block ``prefix``; return the stream's variance after its two writers.

    The stream's spread grows with every writer: it places the stream LIFs' thresholds.
    """
    thresholds[f"{prefix}.attn.in"] = np.maximum(1, np.round(np.sqrt(stream_variance)))
    for layer in ("q", "k", "v"):
        weight, bias, threshold = _centred_layer(rng, dim, dim, weight_range)
        arrays[f"{prefix}.attn.{layer}.weight"] = weight
        arrays[f"{prefix}.attn.{layer}.bias"] = bias
        thresholds[f"{prefix}.attn.{layer}"] = threshold
    thresholds[f"{prefix}.attn.attn"] = np.full(dim, 2**attn_shift)
    for writer, in_features, stream_name in (
        ("attn.proj", dim, "mlp.in"), ("mlp.fc2", mlp_dim, None)
    ):
        weight, bias, spread = _centred_layer(rng, dim, in_features, weight_range)
        arrays[f"{prefix}.{writer}.weight"] = weight
        arrays[f"{prefix}.{writer}.bias"] = bias
        stream_variance = stream_variance + spread.astype(np.float64) ** 2
        if stream_name is not None:
            thresholds[f"{prefix}.{stream_name}"] = np.maximum(
                1, np.round(np.sqrt(stream_variance))
            )
    weight, bias, threshold = _centred_layer(rng, mlp_dim, dim, weight_range)
    arrays[f"{prefix}.mlp.fc1.weight"] = weight
    arrays[f"{prefix}.mlp.fc1.bias"] = bias
    thresholds[f"{prefix}.mlp.fc1"] = threshold
    return stream_variance


def random_head(rng: np.random.Generator, arrays: dict[str, np.ndarray],
                thresholds: dict[str, np.ndarray], stream_variance: np.ndarray, *,
                num_classes: int, dim: int, typical_count: float, weight_range: int) -> None:
    """Add the head: its LIF placed by the stream's spread, its bias by ``typical_count``.

    The bias centres the logits on the typical head count, so that the class depends on
    the image.
    """
    thresholds["head.in"] = np.maximum(1, np.round(np.sqrt(stream_variance)))
    arrays["head.weight"] = rng.integers(-weight_range, weight_range + 1, size=(num_classes, dim))
    arrays["head.bias"] = -np.round(typical_count * arrays["head.weight"].sum(axis=1))


def _default_mask(rng: np.random.Generator, depth: int, t_max: int,
                  stem: dict | None) -> np.ndarray:
    """Return a random mask; with a stem, one step where every stem module is active."""
    mask = random_mask(rng, len(module_names_for(depth, stem)), t_max)
    if stem is not None:
        mask[:len(module_names_for(0, stem)) - 1, rng.integers(0, t_max)] = 1
    return mask


def _tokens_of(image_shape: Sequence[int], patch: int, dim: int, stem: dict | None) -> int:
    """Return the token count of the patch embedding or of ``stem``, refusing a bad stem."""
    if stem is None:
        return (int(image_shape[1]) // patch) * (int(image_shape[2]) // patch)
    try:
        tokens, last = stem_tokens(image_shape, stem)
    except ValueError as error:
        raise StepvitError(f"random export: {error}") from None
    if last != dim:
        raise StepvitError(f"random export: the stem ends with {last} channels, dim is {dim}")
    return tokens


def make_random_export(
    out_dir: str | Path, *, image_shape: Sequence[int], patch: int, dim: int, heads: int,
    depth: int, mlp_dim: int, num_classes: int, t_max: int, seed: int = 0,
    mask: np.ndarray | None = None, leak_shift: int = 1, reset: str = "hard",
    attn_shift: int | None = None, weight_range: int = 40, stem: dict | None = None,
    name: str = "random",
) -> Path:
    """Write a valid untrained export with random integer weights into ``out_dir``.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Export directory to write.
    image_shape : sequence of int
        ``[C, H, W]``.
    patch, dim, heads, depth, mlp_dim, num_classes, t_max : int
        The architecture (SPEC.md section 1).
    seed : int
        Seed of the random generator; the same seed gives the same export.
    mask : numpy.ndarray, optional
        0/1 ``[modules, t_max]`` (module order of SPEC.md section 1, the stem's modules
        first when there is one); random (every module active at least once) if omitted.
    leak_shift, reset : int, str
        The ``neuron`` section.
    attn_shift : int, optional
        The attention threshold's shift; by default :func:`default_attn_shift`.
    weight_range : int
        Weights are uniform in ``[-weight_range, weight_range]`` (at most 127).
    stem : dict, optional
        A convolutional stem (SPEC.md section 5) in place of the patch embedding (``patch``
        unused; ``dim`` its last stage's channels).
    name : str
        The export's name.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    rng = np.random.default_rng(seed)
    channels, height, width = (int(v) for v in image_shape)
    stem = complete_stem(stem) if stem else None
    tokens = _tokens_of(image_shape, patch, dim, stem)
    attn_shift = default_attn_shift(tokens, dim, heads) if attn_shift is None else attn_shift
    mask = _default_mask(rng, depth, t_max, stem) if mask is None else mask
    arrays: dict[str, np.ndarray] = {}
    thresholds: dict[str, np.ndarray] = {}
    if stem is not None:
        stream_variance = random_stem(rng, arrays, thresholds, image_shape=image_shape,
                                      stem=stem, weight_range=weight_range)
    else:
        stream_variance = random_embedding(rng, arrays, thresholds,
                                           patch_len=channels * patch**2, tokens=tokens,
                                           dim=dim, weight_range=weight_range)
    for block in range(depth):
        stream_variance = random_block(rng, arrays, thresholds, f"blocks.{block}",
                                       stream_variance, dim=dim, mlp_dim=mlp_dim,
                                       attn_shift=attn_shift, weight_range=weight_range)
    typical_count = tokens * int(np.asarray(mask)[-1].sum()) * DEEP_SPIKE_RATE
    random_head(rng, arrays, thresholds, stream_variance, num_classes=num_classes, dim=dim,
                typical_count=typical_count, weight_range=weight_range)
    architecture = {
        "image_shape": [channels, height, width], "patch": None if stem else int(patch),
        **({"stem": stem} if stem else {}), "tokens": tokens,
        "dim": int(dim), "heads": int(heads), "depth": int(depth), "mlp_dim": int(mlp_dim),
        "num_classes": int(num_classes), "class_names": [str(i) for i in range(num_classes)],
    }
    neuron = {"leak_shift": int(leak_shift), "reset": reset, "attn_shift": int(attn_shift)}
    return write_export(out_dir, name=name, architecture=architecture, t_max=t_max,
                        neuron=neuron, timestep_mask=mask, thresholds=thresholds, arrays=arrays)
