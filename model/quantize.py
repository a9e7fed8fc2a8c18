"""Quantize a trained float :class:`~stepvit.model.network.SpikingViT` to integers (SPEC.md §3).

Every BatchNorm is folded into the weights and biases in front of it; every scale is folded
into an integer threshold, so the integer network computes, in its own units, what the
float one computes with threshold 1.0:

- A layer on spikes (``q``, ``k``, ``v``, ``fc1``) gets a per-output-channel scale
  ``s_o = 127 / max_j |W[o, j]|`` (at most :data:`MAX_SCALE`): ``W_int = round(W * s_o)``,
  ``b_int = round(b * s_o)``, threshold ``round(s_o)``.
- The embedding (pixels 0..255) likewise, with the ``1/255`` of the float input folded into
  its weights and the position embedding into its bias ``[N, D]``.
- The residual stream is kept per channel ``c`` in units of ``1/E_c`` (``stream_spike``):
  an embedding spike adds ``E_c``, every writer (``proj``, ``fc2`` of every block) has
  ``W_int[c, :] = round(W[c, :] * E_c)``, and the LIFs on the stream (``attn.in``,
  ``mlp.in``, ``head.in``) fire at ``E_c``. ``E_c`` is the largest integer for which every
  writer's row still fits int8.
- Attention counts are exact integers; its LIF fires at ``2**attn_shift``.
- The head's weights share one scale ``S`` (so the argmax is kept):
  ``W_int = round(W * S)``, ``b_int = round(b * S * N * T)``, because the float head divides
  the counts by ``N * T`` and the integer one does not.

A module whose mask has no active step never runs; its BatchNorm statistics saw only the
zeros of its frozen steps, so folding them is meaningless: its weights and biases are
exported as zeros (it adds nothing either way).

A weight that cannot be represented (a stream writer's weight above 127.49, which leaves no
``E_c >= 1``) is refused with a :class:`~stepvit.model.export.errors.StepvitError` naming the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from stepvit.model.export import module_names_for
from stepvit.model.export.errors import StepvitError
from stepvit.model.lif import LIFNeuron
from stepvit.model.network import ConvStage, LinearBN, SpikingViT

#: Largest integer magnitude of an int8 weight.
INT8_MAX = 127
#: Largest scale of a layer on spikes: keeps thresholds and membranes narrow when a
#: channel's weights are all tiny.
MAX_SCALE = 4096.0
#: Largest magnitude whose round() is still 127.
INT8_ROUNDING_LIMIT = 127.49


@dataclass
class QuantizedNetwork:
    """Everything :func:`stepvit.model.export.writer.write_export` needs, but the name.

    Attributes
    ----------
    architecture : dict
        SPEC.md section 4 ``architecture``.
    t_max : int
        Time steps.
    neuron : dict
        ``leak_shift``, ``reset``, ``attn_shift``.
    timestep_mask : numpy.ndarray
        The trained 0/1 mask ``[2L + 2, T]``.
    thresholds : dict of str to numpy.ndarray
        Integer threshold per channel of each LIF layer.
    arrays : dict of str to numpy.ndarray
        Integer weights and biases (int64 here; the writer narrows them).
    scales : dict of str to numpy.ndarray
        The float scale of each layer's output (for diagnostics and tests).
    """

    architecture: dict[str, Any]
    t_max: int
    neuron: dict[str, Any]
    timestep_mask: np.ndarray
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scales: dict[str, np.ndarray] = field(default_factory=dict)

    def writer_arguments(self) -> dict[str, Any]:
        """Return the keyword arguments of ``write_export`` (but ``name`` and ``accuracy``)."""
        return {
            "architecture": self.architecture,
            "t_max": self.t_max,
            "neuron": self.neuron,
            "timestep_mask": self.timestep_mask,
            "thresholds": self.thresholds,
            "arrays": self.arrays,
        }


def bn_factors(bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(gain, shift)`` of an eval-mode BatchNorm: ``y = x * gain + shift``."""
    gain = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps))
    shift = bn.bias.detach().double() - bn.running_mean.double() * gain
    return gain.numpy(), shift.numpy()


def fold_linear_bn(layer: LinearBN) -> tuple[np.ndarray, np.ndarray]:
    """Return the float ``(weight [out, in], bias [out])`` of a bias-free linear + BN."""
    gain, shift = bn_factors(layer.bn)
    weight = layer.linear.weight.detach().double().numpy() * gain[:, None]
    return weight, shift


def fold_embedding(model: SpikingViT) -> tuple[np.ndarray, np.ndarray]:
    """Return the embedding's float ``(weight [D, C·p·p] per pixel 0..255, bias [N, D])``."""
    gain, shift = bn_factors(model.embed.bn)
    conv = model.embed.conv
    weight = conv.weight.detach().double().numpy().reshape(conv.out_channels, -1)
    weight = weight * gain[:, None] / 255.0
    conv_bias = conv.bias.detach().double().numpy()
    bias = (conv_bias * gain + shift)[None, :] + model.embed.pos.detach().double().numpy()
    return weight, bias


def fold_conv_bn(stage: ConvStage) -> tuple[np.ndarray, np.ndarray]:
    """Return the float ``(weight [Cout, Cin, k, k], bias [Cout])`` of a stem stage's conv + BN.

    Stage 0 (``stage.direct``) takes pixels 0..255: the ``1/255`` of its float input is
    folded into its weights.
    """
    gain, shift = bn_factors(stage.bn)
    weight = stage.conv.weight.detach().double().numpy() * gain[:, None, None, None]
    return (weight / 255.0 if stage.direct else weight), shift


def round_int(values: np.ndarray) -> np.ndarray:
    """Round half away from zero, to int64 (``np.round`` rounds half to even)."""
    return (np.sign(values) * np.floor(np.abs(values) + 0.5)).astype(np.int64)


def channel_scales(weight: np.ndarray, maximum: float = MAX_SCALE) -> np.ndarray:
    """Return ``127 / max_j |W[o, j]|`` per output channel, at most ``maximum``."""
    largest = np.abs(weight).max(axis=1)
    # an all-zero row (a module that never runs) needs a finite scale, whatever the limit
    scales = np.full(largest.shape, min(maximum, MAX_SCALE))
    nonzero = largest > 0
    scales[nonzero] = np.minimum(INT8_MAX / largest[nonzero], maximum)
    return scales


def quantize_spiking_layer(name: str, weight: np.ndarray, bias: np.ndarray,
                           network: QuantizedNetwork, maximum: float = MAX_SCALE) -> None:
    """Quantize a layer whose output feeds a LIF of threshold 1 (its weight ``[out, ...]``).

    Its inputs are spikes, or pixels for a stem's stage 0 (``maximum`` inf, as the embedding).
    """
    scales = channel_scales(weight.reshape(weight.shape[0], -1), maximum)
    network.arrays[f"{name}.weight"] = round_int(
        weight * scales.reshape(-1, *([1] * (weight.ndim - 1))))
    network.arrays[f"{name}.bias"] = round_int(bias * scales)
    network.thresholds[name] = np.maximum(1, round_int(scales))
    network.scales[name] = scales


def stream_units(writers: dict[str, np.ndarray]) -> np.ndarray:
    """Return ``E_c``: the largest integer with ``round(W[c, :] * E_c)`` in int8 for all writers.

    Raises
    ------
    StepvitError
        If some writer's weight is too large for any ``E_c >= 1``; names the layer.
    """
    largest = np.max([np.abs(weight).max(axis=1) for weight in writers.values()], axis=0)
    for layer, weight in writers.items():
        too_big = np.abs(weight).max(axis=1) > INT8_ROUNDING_LIMIT
        if too_big.any():
            channel = int(np.flatnonzero(too_big)[0])
            raise StepvitError(
                f"export: {layer}.weight channel {channel} has a weight of "
                f"{np.abs(weight[channel]).max():.1f} stream units, more than int8 holds"
            )
    units = np.full(largest.shape, MAX_SCALE)
    nonzero = largest > 0
    units[nonzero] = np.minimum(np.floor(INT8_ROUNDING_LIMIT / largest[nonzero]), MAX_SCALE)
    return units.astype(np.int64)


def architecture_of(model: SpikingViT, class_names: list[str]) -> dict[str, Any]:
    """Return the SPEC.md section 4 ``architecture`` of ``model``.

    Raises
    ------
    StepvitError
        If ``class_names`` does not name every class.
    """
    channels, height, width = model.image_shape
    dim = model.head.linear.in_features
    num_classes = model.head.linear.out_features
    if len(class_names) != num_classes:
        raise StepvitError(f"export: {len(class_names)} class names for {num_classes} classes")
    stem = {} if model.stem_config is None else {"stem": model.stem_config}
    return {
        "image_shape": [channels, height, width],
        "patch": None if stem else int(model.embed.conv.kernel_size[0]),
        **stem,
        "tokens": int(model.tokens),
        "dim": int(dim),
        "heads": int(model.blocks[0].attn.heads) if model.depth else 1,
        "depth": int(model.depth),
        "mlp_dim": int(model.blocks[0].mlp.fc1.linear.out_features) if model.depth else dim,
        "num_classes": int(num_classes),
        "class_names": [str(name) for name in class_names],
    }


def quantize_embedding(model: SpikingViT, network: QuantizedNetwork) -> None:
    """Quantize the embedding (pixels 0..255 in, threshold 1 out) into ``network``."""
    weight, bias = fold_embedding(model)
    scales = channel_scales(weight, maximum=float("inf"))
    network.arrays["embed.weight"] = round_int(weight * scales[:, None])
    network.arrays["embed.bias"] = round_int(bias * scales[None, :])
    network.thresholds["embed"] = np.maximum(1, round_int(scales))
    network.scales["embed"] = scales


def quantize_stem(model: SpikingViT, network: QuantizedNetwork) -> None:
    """Quantize the stem's stages and RPE (SPEC.md section 5) into ``network``.

    Each is a layer feeding a LIF of threshold 1: stage 0 on pixels (no scale limit, as the
    embedding), the others on spikes. A module with no active step is folded to zeros.
    """
    active_steps = network.timestep_mask.sum(axis=1)
    for row, (name, stage) in enumerate(zip(model.stem.names, model.stem.modules_in_order(),
                                            strict=True)):
        weight, bias = fold_conv_bn(stage)
        if active_steps[row] == 0:
            weight, bias = np.zeros_like(weight), np.zeros_like(bias)
        quantize_spiking_layer(name, weight, bias, network,
                               maximum=float("inf") if stage.direct else MAX_SCALE)


def quantize_blocks(model: SpikingViT,
                    network: QuantizedNetwork) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Quantize every layer on spikes of the blocks into ``network``.

    Returns the float ``(weight, bias)`` of each stream writer (``proj``, ``fc2``), which
    :func:`quantize_stream` scales once every writer is known. A module with no active
    step is folded to zeros.
    """
    active_steps = network.timestep_mask.sum(axis=1)
    dim = network.architecture["dim"]
    attn_shift = network.neuron["attn_shift"]

    def folded(index: int, module: str, layer: LinearBN) -> tuple[np.ndarray, np.ndarray]:
        weight, bias = fold_linear_bn(layer)
        if active_steps[model.stem_modules + 2 * index + (module == "mlp")] == 0:
            return np.zeros_like(weight), np.zeros_like(bias)
        return weight, bias

    writers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for index, block in enumerate(model.blocks):
        prefix = f"blocks.{index}"
        for name in ("q", "k", "v"):
            weight, bias = folded(index, "attn", getattr(block.attn, name))
            quantize_spiking_layer(f"{prefix}.attn.{name}", weight, bias, network)
        weight, bias = folded(index, "mlp", block.mlp.fc1)
        quantize_spiking_layer(f"{prefix}.mlp.fc1", weight, bias, network)
        writers[f"{prefix}.attn.proj"] = folded(index, "attn", block.attn.proj)
        writers[f"{prefix}.mlp.fc2"] = folded(index, "mlp", block.mlp.fc2)
        network.thresholds[f"{prefix}.attn.attn"] = np.full(dim, 2**attn_shift, dtype=np.int64)
    return writers


def quantize_stream(writers: dict[str, tuple[np.ndarray, np.ndarray]],
                    network: QuantizedNetwork) -> None:
    """Choose the stream units ``E_c``; quantize the writers and the stream LIFs' thresholds."""
    dim, depth = network.architecture["dim"], network.architecture["depth"]
    units = stream_units({name: weight for name, (weight, _) in writers.items()}) if writers \
        else np.full(dim, INT8_MAX, dtype=np.int64)
    network.arrays["stream_spike"] = units
    network.scales["stream"] = units.astype(np.float64)
    for name, (weight, bias) in writers.items():
        network.arrays[f"{name}.weight"] = round_int(weight * units[:, None])
        network.arrays[f"{name}.bias"] = round_int(bias * units)
    for index in range(depth):
        for name in ("attn.in", "mlp.in"):
            network.thresholds[f"blocks.{index}.{name}"] = units.copy()
    network.thresholds["head.in"] = units.copy()


def quantize_head(model: SpikingViT, network: QuantizedNetwork) -> None:
    """Quantize the head with one scale ``S`` (its bias times ``N * T``) into ``network``."""
    weight = model.head.linear.weight.detach().double().numpy()
    bias = model.head.linear.bias.detach().double().numpy()
    largest = np.abs(weight).max()
    scale = INT8_MAX / largest if largest > 0 else 1.0
    network.arrays["head.weight"] = round_int(weight * scale)
    network.arrays["head.bias"] = round_int(bias * scale * model.tokens * model.t_max)
    network.scales["head"] = np.array([scale])


@torch.no_grad()
def quantize(model: SpikingViT, class_names: list[str]) -> QuantizedNetwork:
    """Return the integer network of a trained float ``model`` (in eval mode).

    Parameters
    ----------
    model : SpikingViT
        The trained float network.
    class_names : list of str
        One name per class.

    Raises
    ------
    StepvitError
        If a layer cannot be represented; the message names it.
    """
    model = model.eval()
    if any(isinstance(module, LIFNeuron) and not module.spiking for module in model.modules()):
        raise StepvitError("export: this run is the non-spiking twin (model.neuron: relu), a "
                           "float baseline with no spikes to export")
    first_neuron = next(iter(model.lif_layers().values()))
    network = QuantizedNetwork(
        architecture=architecture_of(model, class_names),
        t_max=int(model.t_max),
        neuron={"leak_shift": int(first_neuron.leak_shift),
                "reset": first_neuron.reset_rule,
                "attn_shift": int(model.blocks[0].attn.attn_shift) if model.depth else 0},
        timestep_mask=model.timestep_mask().numpy().astype(np.int64),
    )
    modules = module_names_for(model.depth, model.stem_config)
    if network.timestep_mask.shape != (len(modules), model.t_max):
        raise StepvitError(f"export: timestep_scores has shape {network.timestep_mask.shape}")
    if model.stem_config is not None:
        quantize_stem(model, network)
    else:
        quantize_embedding(model, network)
    quantize_stream(quantize_blocks(model, network), network)
    quantize_head(model, network)
    return network
