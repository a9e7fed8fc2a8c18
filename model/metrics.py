"""What a trained network does per image: accuracy, learned time steps, spikes, work, energy.

Work is counted as SPEC.md section 3 ("Work counted") says, from the float model's spikes,
with the golden model's formulas (:func:`stepvit.model.golden.ac_ops_of`):
``ac_ops`` = for every linear layer, active input spikes x out features; attention
``sum_{m,h} |K_mh| |V_mh|`` (Kᵀ·V) plus ``sum_{n,h} |Q_nh| d`` (Q·KV); head spikes x K.
``embed_ac_ops`` = set bits of the pixels x D (shift-and-add), ``mac_ops`` = ``N D C p p``
(the embedding in the float view), ``dense_ac_ops`` = ``ac_ops`` with every spike 1 and
every step active. The energy is an estimate, as SNN papers make it:
``4.6 pJ x mac_ops + 0.9 pJ x ac_ops`` (45 nm, Horowitz, ISSCC 2014).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stepvit.model.data import batches
from stepvit.model.export.energy import energy_estimate_uj
from stepvit.model.export.stem import (
    StemStage,
    dense_stem_ac_ops,
    first_layer_macs,
    stem_stages,
)
from stepvit.model.golden import ac_ops_of, dense_ac_ops_of
from stepvit.model.network import SpikingViT
from stepvit.model.progress import progress_bar


def timestep_summary(mask: torch.Tensor, module_names: list[str]) -> dict[str, Any]:
    """Return the learned time steps of a 0/1 mask ``[2L + 2, T]``.

    Returns
    -------
    dict
        ``timestep_mask`` (nested lists), ``timesteps_per_module`` (name -> active steps),
        ``timesteps_per_block`` (steps where the block's attn or mlp is active) and
        ``avg_timesteps`` (mean over modules of active steps).
    """
    mask = mask.to(torch.int64).cpu()
    row = {name: index for index, name in enumerate(module_names)}
    depth = sum(name.endswith(".attn") for name in module_names)
    per_block = [int((mask[row[f"blocks.{index}.attn"]] | mask[row[f"blocks.{index}.mlp"]]).sum())
                 for index in range(depth)]
    return {
        "timestep_mask": mask.tolist(),
        "timesteps_per_module": {name: int(row.sum()) for name, row in zip(module_names, mask)},
        "timesteps_per_block": per_block,
        "avg_timesteps": float(mask.sum(dim=1).double().mean()),
    }


def work_widths(model: SpikingViT) -> dict[str, int]:
    """Return ``depth``, ``dim``, ``head_dim``, ``mlp_dim`` and ``num_classes`` of ``model``."""
    dim = model.head.linear.in_features
    return {
        "depth": model.depth,
        "dim": dim,
        "head_dim": dim // model.blocks[0].attn.heads if model.depth else dim,
        "mlp_dim": model.blocks[0].mlp.fc1.linear.out_features if model.depth else dim,
        "num_classes": model.head.linear.out_features,
    }


def layer_widths(model: SpikingViT) -> dict[str, int]:
    """Return the number of neurons of each LIF layer (tokens x channels)."""
    widths = work_widths(model)
    stem = {stage.name: int(np.prod(stage.lif_shape)) for stage in stem_stages_of(model)}
    return {name: stem[name] if name in stem
            else model.tokens * widths["mlp_dim" if name.endswith("mlp.fc1") else "dim"]
            for name in model.layer_names()}


def stem_stages_of(model: SpikingViT) -> list[StemStage]:
    """Return the shapes of the model's stem modules (none without a stem)."""
    if model.stem_config is None:
        return []
    return stem_stages(model.image_shape, model.stem_config)


def first_layer_work(model: SpikingViT) -> tuple[int, np.ndarray]:
    """Return the first layer's ``mac_ops`` (float view) and its accumulates per set bit.

    The first layer sees the image: the patch embedding (``N D C p p`` MACs; a set bit of a
    pixel adds a weight column of ``D``) or the stem's first conv (``H' W' Cout C k k``; a
    set bit at ``(y, x)`` adds ``Cout`` weights at each of the ``reach[y, x]`` positions).
    The second value is ``[H, W]``: accumulates per set bit of a pixel at each position.
    """
    stages = stem_stages_of(model)
    dim = model.head.linear.in_features
    mac_ops = first_layer_macs({
        "image_shape": list(model.image_shape), "tokens": model.tokens, "dim": dim,
        "patch": None if stages else model.embed.conv.kernel_size[0],
        "stem": model.stem_config})
    if not stages:
        return mac_ops, np.full(model.image_shape[1:], dim)
    return mac_ops, stages[0].reach() * stages[0].conv_shape[0]


def set_bits_map(images: torch.Tensor) -> torch.Tensor:
    """Return ``[B, H, W]``: the set bits of the uint8 pixels at each position (channels summed)."""
    pixels = images.to(torch.int64)
    return sum(((pixels >> bit) & 1) for bit in range(8)).sum(dim=1)


def dense_ac_ops(model: SpikingViT) -> int:
    """Return the accumulates of one image with every spike 1 and every step active.

    With a stem, its convolutions on spikes count too (every input position spiking).
    """
    return (dense_ac_ops_of(tokens=model.tokens, t_max=model.t_max, **work_widths(model))
            + model.t_max * dense_stem_ac_ops(stem_stages_of(model)))


def ac_ops_per_image(model: SpikingViT, spikes: dict[str, torch.Tensor],
                     kv_pairs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Return the accumulates of each image ``[B]`` from a forward trace.

    Parameters
    ----------
    model : SpikingViT
        The network that made the trace (its widths).
    spikes : dict
        Layer -> ``[B, T]`` spike counts (:attr:`stepvit.model.network.Trace.spikes`).
    kv_pairs : dict
        Attention module -> ``[B, T]`` Kᵀ·V accumulates.
    """
    return ac_ops_of(spikes, kv_pairs, **work_widths(model))


@torch.no_grad()
def measure(model: SpikingViT, images: torch.Tensor, labels: torch.Tensor, *,
            batch_size: int = 256, masks: torch.Tensor | None = None,
            progress: bool = False) -> dict[str, Any]:
    """Run ``model`` over a data set and return its accuracy, time steps, spikes and work.

    Parameters
    ----------
    model : SpikingViT
        The float network (put in eval mode for the run, then restored).
    images, labels : torch.Tensor
        uint8 ``[N, C, H, W]`` and ``[N]``.
    batch_size : int
        Images per forward pass.
    masks : torch.Tensor, optional
        A 0/1 mask ``[2L + 2, T]`` to run with instead of the trained one.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    dict
        ``test_accuracy``, ``images``, the entries of :func:`timestep_summary`,
        ``spikes_per_image`` and ``spike_rate`` (spikes per neuron per step, over all T
        steps) per layer, ``ac_ops``, ``embed_ac_ops``, ``mac_ops``, ``dense_ac_ops`` (per
        image, mean) and ``energy_uj`` (per image).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    spike_totals = {name: 0.0 for name in model.layer_names()}
    ac_total = 0.0
    stem_total = 0.0
    bits_total = 0.0
    mac_ops, per_bit = first_layer_work(model)
    per_bit = torch.from_numpy(per_bit).to(torch.float64)
    used_mask = None
    for batch_images, batch_labels in progress_bar(batches(images, labels, batch_size),
                                                   total=-(-len(labels) // batch_size),
                                                   desc="measure", enabled=progress,
                                                   leave=False):
        trace = model.trace(batch_images.to(device), masks=masks)
        correct += int((trace.logits.argmax(dim=1).cpu() == batch_labels).sum())
        for name, counts in trace.spikes.items():
            spike_totals[name] += float(counts.sum())
        ac_total += float(ac_ops_per_image(model, trace.spikes, trace.kv_pairs).sum())
        stem_total += float(trace.stem_ac_ops.sum())
        bits_total += float((set_bits_map(batch_images).to(torch.float64) * per_bit).sum())
        used_mask = trace.masks
    model.train(was_training)
    count = len(labels)
    widths = layer_widths(model)
    ac_ops = (ac_total + stem_total) / count
    results: dict[str, Any] = {"test_accuracy": correct / count, "images": count,
                               "t_max": model.t_max}
    results.update(timestep_summary(used_mask, model.module_names()))
    results["spikes_per_image"] = {name: total / count for name, total in spike_totals.items()}
    results["spike_rate"] = {name: total / (count * widths[name] * model.t_max)
                             for name, total in spike_totals.items()}
    results["ac_ops"] = ac_ops
    results["stem_ac_ops"] = stem_total / count
    results["embed_ac_ops"] = bits_total / count
    results["mac_ops"] = mac_ops
    results["dense_ac_ops"] = dense_ac_ops(model)
    results["energy_uj"] = energy_estimate_uj(mac_ops, ac_ops)
    return results
