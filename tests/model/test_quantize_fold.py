"""The quantizer: BN folding, per-channel scales, stream units, refusals, dead modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stepvit.model.export import load_export
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.writer import write_export
from stepvit.model.golden import GoldenModel
from stepvit.model.network import SpikingViT
from stepvit.model.quantize import (
    INT8_ROUNDING_LIMIT,
    fold_embedding,
    fold_linear_bn,
    quantize,
    stream_units,
)

SHAPE = (1, 8, 8)


def randomized_model(seed: int = 0) -> SpikingViT:
    """A small network with random BN statistics and affine parameters, in eval mode."""
    torch.manual_seed(seed)
    model = SpikingViT(SHAPE, patch=2, dim=16, heads=2, depth=2, mlp_dim=32, num_classes=5,
                       t_max=3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def test_folded_linear_bn_matches_the_layer() -> None:
    model = randomized_model()
    layer = model.blocks[1].attn.q
    inputs = (torch.rand(4, 16, 16) < 0.3).double()
    weight, bias = fold_linear_bn(layer)
    expected = layer.double()(inputs).detach().numpy()
    np.testing.assert_allclose(inputs.numpy() @ weight.T + bias, expected, atol=1e-9)


def test_folded_embedding_matches_the_patch_embedding() -> None:
    model = randomized_model().double()
    images = torch.randint(0, 256, (3, *SHAPE), dtype=torch.uint8)
    weight, bias = fold_embedding(model)
    patches = images.reshape(3, 1, 4, 2, 4, 2).permute(0, 2, 4, 1, 3, 5).reshape(3, 16, 4)
    folded = patches.double().numpy() @ weight.T + bias
    expected = model.embed(images.double() / 255.0).detach().numpy()
    np.testing.assert_allclose(folded, expected, atol=1e-9)


def test_integer_embedding_current_is_the_float_one_scaled(tmp_path: Path) -> None:
    model = randomized_model()
    network = quantize(model, [str(k) for k in range(5)])
    export = load_export(write_export(tmp_path, name="q", **network.writer_arguments()))
    images = torch.randint(0, 256, (4, *SHAPE), dtype=torch.uint8)
    current, _ = GoldenModel(export).embed_current(images.long())
    scales = network.scales["embed"]
    with torch.no_grad():
        expected = model.embed.double()(images.double() / 255.0).numpy()
    # each of the 4 products rounds its weight by at most 0.5, the bias by 0.5
    tolerance = (0.5 * 4 * 255 + 0.5) / scales
    error = np.abs(current.numpy() / scales - expected)
    assert (error <= tolerance).all()
    assert (np.abs(export.arrays["embed.weight"]).max(axis=1) == 127).all()
    corrupted = current.numpy().copy()
    corrupted[0, 0, 0] += int(2 * tolerance[0] * scales[0]) + 1
    assert not (np.abs(corrupted / scales - expected) <= tolerance).all()


def test_spiking_layers_use_the_full_int8_range_and_thresholds_carry_the_scale() -> None:
    model = randomized_model()
    network = quantize(model, [str(k) for k in range(5)])
    weight = network.arrays["blocks.0.attn.k.weight"]
    assert (np.abs(weight).max(axis=1) == 127).all()
    float_weight, _ = fold_linear_bn(model.blocks[0].attn.k)
    scales = 127 / np.abs(float_weight).max(axis=1)
    assert network.thresholds["blocks.0.attn.k"].tolist() == np.floor(scales + 0.5).tolist()


def test_stream_units_are_the_largest_that_fit_int8() -> None:
    model = randomized_model()
    network = quantize(model, [str(k) for k in range(5)])
    units = network.arrays["stream_spike"]
    largest = np.max([np.abs(fold_linear_bn(layer)[0]).max(axis=1) for block in model.blocks
                      for layer in (block.attn.proj, block.mlp.fc2)], axis=0)
    assert (units * largest <= INT8_ROUNDING_LIMIT).all()
    assert ((units + 1) * largest > INT8_ROUNDING_LIMIT).all()
    for name in ("blocks.0.attn.in", "blocks.1.mlp.in", "head.in"):
        assert network.thresholds[name].tolist() == units.tolist()
    for key in ("blocks.0.attn.proj.weight", "blocks.1.mlp.fc2.weight"):
        assert np.abs(network.arrays[key]).max() <= 127


def test_a_writer_weight_beyond_int8_is_refused_by_name() -> None:
    writers = {"blocks.0.attn.proj": np.ones((4, 4)),
               "blocks.0.mlp.fc2": np.array([[1.0] * 4, [200.0] * 4, [1.0] * 4, [1.0] * 4])}
    with pytest.raises(StepvitError, match=r"blocks\.0\.mlp\.fc2\.weight channel 1"):
        stream_units(writers)


def test_a_never_active_module_is_exported_as_zeros() -> None:
    model = randomized_model()
    with torch.no_grad():
        model.timestep_scores[2] = -1.0  # blocks.0.mlp
    network = quantize(model, [str(k) for k in range(5)])
    assert network.timestep_mask[2].tolist() == [0, 0, 0]
    for key in ("blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.weight",
                "blocks.0.mlp.fc2.bias"):
        assert not network.arrays[key].any()
    assert network.arrays["blocks.0.attn.q.weight"].any()


def test_head_bias_carries_the_count_normalisation() -> None:
    model = randomized_model()
    network = quantize(model, [str(k) for k in range(5)])
    weight = model.head.linear.weight.detach().double().numpy()
    bias = model.head.linear.bias.detach().double().numpy()
    scale = 127 / np.abs(weight).max()
    assert np.abs(network.arrays["head.weight"]).max() == 127
    expected = np.sign(bias) * np.floor(np.abs(bias * scale * 16 * 3) + 0.5)
    assert network.arrays["head.bias"].tolist() == expected.astype(np.int64).tolist()


def test_class_names_must_match_the_classes() -> None:
    with pytest.raises(StepvitError, match="3 class names for 5 classes"):
        quantize(randomized_model(), ["a", "b", "c"])
