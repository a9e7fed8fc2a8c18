"""Bit widths are proven: every layer fed its worst-case input stays inside its width.

Each check builds the input pattern that drives a layer's result furthest from zero
(spikes exactly where the weights have the sign wanted, white pixels where the embedding
weights are positive, every attention spike on, a membrane charged by the largest current
of the opposite sign at every step), computes it with the golden model's own arithmetic,
and checks the declared signed width holds it. The proven bounds (triangle inequality)
are looser than these patterns by up to a bit; the patterns are the real worst cases.
"""

import numpy as np
import pytest
import torch

from stepvit.model.export import Export, load_export, signed_bits, worst_case_bounds
from stepvit.model.golden import GoldenModel, lif_step

DIGITS = dict(image_shape=[1, 8, 8], patch=2, dim=32, heads=2, depth=2, mlp_dim=64,
              num_classes=10, t_max=4)
WRITERS = ("attn.proj", "mlp.fc2")
LINEARS = ("attn.q", "attn.k", "attn.v", *WRITERS, "mlp.fc1")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    return load_export(random_export(tmp_path_factory.mktemp("w") / "e", **DIGITS, seed=3))


def fits(value: int, bits: int) -> bool:
    return -(2 ** (bits - 1)) <= value <= 2 ** (bits - 1) - 1


def extreme_linear_outputs(golden: GoldenModel, name: str, sign: int) -> torch.Tensor:
    """Per output channel o, the current when the spikes select the weights of ``sign``."""
    weight = golden.weights[f"{name}.weight"]
    spikes = (weight * sign > 0).to(torch.int64)  # [out, in]: one worst pattern per output
    return (spikes * weight).sum(dim=1) + golden.weights[f"{name}.bias"]


def worst_cases(export: Export) -> dict[str, int]:
    """The largest magnitude each width class reaches under its worst-case inputs."""
    golden = GoldenModel(export)
    t_max, tokens = export.t_max, export.arch["tokens"]
    worst: dict[str, int] = {}
    # Embedding: for each output channel, an image white where that channel's weights are
    # positive (or negative) and black elsewhere, through the shift-and-add path.
    channels, height, width = export.arch["image_shape"]
    embed = 0
    for sign in (1, -1):
        for channel_weights in golden.weights["embed.weight"]:
            pixels = torch.where(channel_weights * sign > 0, 255, 0)
            patch = golden.patch
            image = pixels.reshape(channels, patch, patch).repeat(1, height // patch,
                                                                  width // patch)
            current, _ = golden.embed_current(image[None])
            embed = max(embed, int(current.abs().max()))
    worst["embed_current"] = embed
    currents = {}
    stream = {sign: golden.weights["stream_spike"] * (sign > 0) for sign in (1, -1)}
    for block in range(export.arch["depth"]):
        for name in LINEARS:
            layer = f"blocks.{block}.{name}"
            for sign in (1, -1):
                outputs = extreme_linear_outputs(golden, layer, sign)
                currents[layer] = max(currents.get(layer, 0), int(outputs.abs().max()))
                if name in WRITERS:
                    stream[sign] = stream[sign] + outputs
    worst["current"] = max(currents.values())
    worst["stream"] = max(int(values.abs().max()) for values in stream.values())
    ones = torch.ones(1, tokens, export.arch["dim"], dtype=torch.int64)
    worst["attention"] = int(golden.attention(ones, ones, ones).max())
    # A membrane driven by the most negative current never fires, so it grows for T steps.
    largest_current = max(embed, worst["stream"], worst["current"], worst["attention"])
    membrane = torch.zeros(1, dtype=torch.int64)
    for _ in range(t_max):
        membrane, _ = lif_step(membrane, torch.tensor([-largest_current]),
                               torch.tensor([1]), golden.leak_shift, golden.reset)
    worst["membrane"] = int(membrane.abs().max())
    counts = torch.full((golden.dim,), tokens * t_max, dtype=torch.int64)
    head = golden.weights["head.weight"]
    worst["logit"] = max(
        int(((head * sign > 0) * head * counts).sum(dim=1).add(golden.weights["head.bias"])
            .abs().max())
        for sign in (1, -1)
    )
    return worst


def test_every_layer_stays_inside_its_width(export: Export) -> None:
    worst = worst_cases(export)
    for key, value in worst.items():
        assert fits(value, export.bit_widths[key]), (key, value, export.bit_widths[key])


def test_the_patterns_stay_inside_the_proven_bounds(export: Export) -> None:
    bounds = worst_case_bounds(export.manifest, export.arrays)
    for key, value in worst_cases(export).items():
        assert value <= bounds[key], (key, value, bounds[key])


def test_random_spikes_never_beat_the_worst_case_patterns(export: Export) -> None:
    golden = GoldenModel(export)
    worst = worst_cases(export)
    rng = np.random.default_rng(0)
    for name in LINEARS:
        layer = f"blocks.0.{name}"
        weight = golden.weights[f"{layer}.weight"]
        spikes = torch.from_numpy(rng.integers(0, 2, size=(2000, weight.shape[1])))
        outputs = spikes @ weight.T + golden.weights[f"{layer}.bias"]
        assert int(outputs.abs().max()) <= worst["current"], layer


def test_a_corrupted_width_is_caught(export: Export) -> None:
    worst = worst_cases(export)
    narrowed = dict(export.bit_widths, stream=signed_bits(worst["stream"]) - 1)
    assert not fits(worst["stream"], narrowed["stream"])
