"""Quantization-aware fine-tuning: train the float weights through the integer network.

:class:`IntegerEmulation` runs SPEC.md section 3 in floating point on a float
:class:`~stepvit.model.network.SpikingViT`: weights, biases and thresholds are folded and
scaled exactly as :func:`stepvit.model.quantize.quantize` does, rounded with a
straight-through gradient, and the LIF leak is the integer floor shift. In float64 its
logits are the golden model's (test-pinned); in float32 they are the same up to rare
ties. :func:`finetune` trains the float parameters (BatchNorm statistics and the time-step
mask frozen) against the emulation's logits, so the exported integer model is the one that
was trained.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from stepvit.model.export.stem import stem_stages
from stepvit.model.lif import reset_membrane, sigmoid_surrogate_spike
from stepvit.model.network import ConvStage, LinearBN, SpikingViT
from stepvit.model.progress import progress_bar
from stepvit.model.quantize import INT8_MAX, INT8_ROUNDING_LIMIT, MAX_SCALE


def round_ste(values: torch.Tensor) -> torch.Tensor:
    """Round half away from zero forward (as the quantizer does); identity backward."""
    rounded = torch.sign(values) * torch.floor(values.abs() + 0.5)
    return values + (rounded - values).detach()


def floor_ste(values: torch.Tensor) -> torch.Tensor:
    """Floor forward; identity backward."""
    return values + (torch.floor(values) - values).detach()


def folded_bn(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the differentiable ``(gain, shift)`` of a BatchNorm with frozen statistics."""
    gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return gain, bn.bias - bn.running_mean * gain


def folded_linear(layer: LinearBN) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the differentiable folded ``(weight, bias)`` of a bias-free linear + BN."""
    gain, shift = folded_bn(layer.bn)
    return layer.linear.weight * gain[:, None], shift


def folded_conv(stage: ConvStage) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the differentiable folded ``(weight [Cout, Cin, k, k], bias)`` of a stem stage.

    Stage 0 takes pixels 0..255: the ``1/255`` of its float input is folded in.
    """
    gain, shift = folded_bn(stage.bn)
    weight = stage.conv.weight * gain[:, None, None, None]
    return (weight / 255.0 if stage.direct else weight), shift


def row_scales(weight: torch.Tensor, maximum: float) -> torch.Tensor:
    """Return the quantizer's per-row scale ``min(127 / max|W|, maximum)`` (no gradient)."""
    largest = weight.detach().abs().amax(dim=1)
    return torch.where(largest > 0, torch.clamp(INT8_MAX / largest, max=maximum),
                       torch.full_like(largest, min(maximum, MAX_SCALE)))


def integer_layer(weight: torch.Tensor, bias: torch.Tensor,
                  maximum: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return a layer's rounded ``(weight, bias, threshold)`` as the quantizer makes them.

    ``weight`` is ``[out, ...]``; its per-output scale is at most ``maximum``.
    """
    scales = row_scales(weight.reshape(weight.shape[0], -1), maximum)
    return (round_ste(weight * scales.view(-1, *([1] * (weight.dim() - 1)))),
            round_ste(bias * scales), torch.clamp(round_ste(scales).detach(), min=1))


class IntegerEmulation(nn.Module):
    """The integer network of a float model, differentiable with straight-through rounding.

    Args:
        model: the float network; its parameters are the ones trained.
    """

    def __init__(self, model: SpikingViT) -> None:
        super().__init__()
        self.model = model

    def integer_layers(self) -> dict[str, Any]:
        """Return the integer weights, biases and thresholds (rounded, straight-through)."""
        model = self.model
        mask = model.timestep_mask()
        layers: dict[str, Any] = {}
        if model.stem_config is not None:
            layers.update(self.stem_layers(mask))
        else:
            gain, shift = folded_bn(model.embed.bn)
            conv = model.embed.conv
            weight = conv.weight.reshape(conv.out_channels, -1) * gain[:, None] / 255.0
            bias = (conv.bias * gain + shift)[None, :] + model.embed.pos
            layers["embed"] = integer_layer(weight, bias, float("inf"))
        writers = {}
        for index, block in enumerate(model.blocks):
            for module, names in (("attn", ("q", "k", "v", "proj")), ("mlp", ("fc1", "fc2"))):
                alive = bool(mask[model.stem_modules + 2 * index + (module == "mlp")].any())
                for name in names:
                    weight, bias = folded_linear(getattr(getattr(block, module), name))
                    if not alive:
                        weight, bias = weight * 0, bias * 0
                    key = f"blocks.{index}.{module}.{name}"
                    if name in ("proj", "fc2"):
                        writers[key] = (weight, bias)
                        continue
                    layers[key] = integer_layer(weight, bias, MAX_SCALE)
        largest = torch.stack([w.detach().abs().amax(dim=1) for w, _ in writers.values()]).amax(0)
        units = torch.where(
            largest > 0,
            torch.clamp(torch.floor(INT8_ROUNDING_LIMIT / largest), max=MAX_SCALE),
            torch.full_like(largest, MAX_SCALE),
        )
        layers["stream_spike"] = units
        for key, (weight, bias) in writers.items():
            layers[key] = (round_ste(weight * units[:, None]), round_ste(bias * units), None)
        head_weight, head_bias = model.head.linear.weight, model.head.linear.bias
        largest_head = head_weight.detach().abs().max()
        head_scale = INT8_MAX / largest_head if largest_head > 0 else torch.ones(())
        # the quantizer's order of operations, so that float64 rounds the same way
        count_scale = head_scale * model.tokens * model.t_max
        layers["head"] = (round_ste(head_weight * head_scale),
                          round_ste(head_bias * head_scale * model.tokens * model.t_max),
                          count_scale)
        return layers

    def stem_layers(self, mask: torch.Tensor) -> dict[str, Any]:
        """Return the stem modules' integer weights, biases and thresholds, as the quantizer."""
        layers = {}
        for row, (name, stage) in enumerate(zip(self.model.stem.names,
                                                self.model.stem.modules_in_order(), strict=True)):
            weight, bias = folded_conv(stage)
            if not bool(mask[row].any()):
                weight, bias = weight * 0, bias * 0
            layers[name] = integer_layer(weight, bias,
                                         float("inf") if stage.direct else MAX_SCALE)
        return layers

    def stem_stream(self, images: torch.Tensor, layers: dict[str, Any], mask: list[list[int]],
                    lif: Any) -> list[torch.Tensor]:
        """Return the stream ``E · (S_last + R)`` ``[B, N, D]`` at every step (SPEC.md §5)."""
        stem = self.model.stem
        units = layers["stream_spike"]

        def conv(stage: ConvStage, name: str, inputs: torch.Tensor) -> torch.Tensor:
            weight, bias, _ = layers[name]
            current = F.conv2d(inputs, weight, bias, stride=stage.conv.stride,
                               padding=stage.conv.padding)
            return stage.pool(current) if stage.place == "before" else current

        def emit(stage: ConvStage, name: str, current: torch.Tensor) -> torch.Tensor:
            threshold = layers[name][2].view(-1, 1, 1)
            fired = lif(name, current, threshold)
            return stage.pool(fired) if stage.place == "after" else fired

        first_current = conv(stem.stages[0], stem.names[0], images)
        shapes = [shape.out_shape for shape in stem_stages(self.model.image_shape,
                                                           self.model.stem_config)]
        streams = []
        for step in range(self.model.t_max):
            spikes = first_current
            for row, stage in enumerate(stem.stages):
                if not mask[row][step]:  # a masked stage hands on zeros
                    spikes = first_current.new_zeros(images.shape[0], *shapes[row])
                    continue
                current = first_current if row == 0 else conv(stage, stem.names[row], spikes)
                spikes = emit(stage, stem.names[row], current)
            tokens = spikes
            rows = len(stem.stages)
            if stem.rpe is not None and mask[rows][step]:
                tokens = spikes + emit(stem.rpe, "stem.rpe", conv(stem.rpe, "stem.rpe", spikes))
            streams.append(tokens.flatten(2).transpose(1, 2) * units)
        return streams

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Return the integer logits divided by the head's scale (float-model units)."""
        logits, count_scale = self.integer_logits(images, masks)
        return logits / count_scale

    def integer_logits(self, images: torch.Tensor, masks: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the golden model's logits (integer values in float) and the head's scale.

        Parameters
        ----------
        images : torch.Tensor
            uint8 ``[B, C, H, W]``.
        masks : torch.Tensor, optional
            0/1 ``[2L + 2, T]``; the trained mask by default.
        """
        model = self.model
        dtype = model.timestep_scores.dtype
        mask = (model.timestep_mask() if masks is None else masks).tolist()
        layers = self.integer_layers()
        first = next(iter(model.lif_layers().values()))
        leak_divisor = 2.0 ** first.leak_shift
        reset = first.reset_rule
        batch, channels, height, width = images.shape
        membranes: dict[str, torch.Tensor] = {}

        def lif(name: str, current: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
            membrane = membranes.get(name, torch.zeros_like(current))
            charged = membrane - floor_ste(membrane / leak_divisor) + current
            spikes = sigmoid_surrogate_spike((charged - threshold) / threshold)
            membranes[name] = reset_membrane(charged, spikes, threshold, reset)
            return spikes

        def linear(key: str, inputs: torch.Tensor) -> torch.Tensor:
            weight, bias, _ = layers[key]
            return inputs @ weight.T + bias

        units = layers["stream_spike"]
        dim = units.shape[0]
        if model.stem_config is not None:
            streams = self.stem_stream(images.to(dtype), layers, mask, lif)
        else:
            p = model.embed.conv.kernel_size[0]
            patches = images.to(dtype).reshape(batch, channels, height // p, p, width // p, p)
            patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, model.tokens, -1)
            weight, bias, threshold = layers["embed"]
            embed_current = patches @ weight.T + bias
        counts = units.new_zeros(batch, dim)
        first_block = model.stem_modules
        for step in range(model.t_max):
            if model.stem_config is not None:
                stream = streams[step]
            elif mask[0][step]:
                stream = lif("embed", embed_current, threshold) * units
            else:
                stream = embed_current.new_zeros(batch, model.tokens, dim)
            for index, block in enumerate(model.blocks):
                prefix = f"blocks.{index}"
                if mask[first_block + 2 * index][step]:
                    spikes = lif(f"{prefix}.attn.in", stream, units)
                    q, k, v = (
                        block.attn.split_heads(lif(f"{prefix}.attn.{name}",
                                                   linear(f"{prefix}.attn.{name}", spikes),
                                                   layers[f"{prefix}.attn.{name}"][2]))
                        for name in ("q", "k", "v")
                    )
                    mixed = (q @ (k.transpose(-2, -1) @ v)).transpose(1, 2).flatten(2)
                    attended = lif(f"{prefix}.attn.attn", mixed,
                                   torch.full_like(units, 2.0**block.attn.attn_shift))
                    stream = stream + linear(f"{prefix}.attn.proj", attended)
                if mask[first_block + 1 + 2 * index][step]:
                    spikes = lif(f"{prefix}.mlp.in", stream, units)
                    hidden = lif(f"{prefix}.mlp.fc1", linear(f"{prefix}.mlp.fc1", spikes),
                                 layers[f"{prefix}.mlp.fc1"][2])
                    stream = stream + linear(f"{prefix}.mlp.fc2", hidden)
            if mask[-1][step]:
                counts = counts + lif("head.in", stream, units).sum(dim=1)
        head_weight, head_bias, count_scale = layers["head"]
        return counts @ head_weight.T + head_bias, count_scale


def finetune(
    model: SpikingViT,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Fine-tune ``model`` in place through its :class:`IntegerEmulation`.

    BatchNorm statistics and the time-step mask stay as trained (the scores get no
    gradient); every other parameter learns with AdamW on the emulated integer logits.

    Returns
    -------
    list of float
        The mean training loss of each epoch.
    """
    emulation = IntegerEmulation(model)
    model.eval()
    device = next(model.parameters()).device
    parameters = [p for name, p in model.named_parameters() if name != "timestep_scores"]
    model.timestep_scores.requires_grad_(False)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    loss_function = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    losses = []
    batches_per_epoch = -(-len(labels) // batch_size)
    bar = progress_bar(total=epochs * batches_per_epoch, desc="quantization-aware fine-tuning",
                       enabled=progress, unit="batch")
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(labels), batch_size):
            chosen = order[start:start + batch_size]
            loss = loss_function(emulation(images[chosen].to(device)), labels[chosen].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(chosen)
            bar.update(1)
        losses.append(total / len(labels))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.timestep_scores.requires_grad_(True)
    return losses
