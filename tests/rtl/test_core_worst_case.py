"""The core at the edges of its declared widths: worst-case magnitudes, bit for bit.

Random exports keep every value far inside its width, so a core one bit too narrow
somewhere still agrees with the golden model on them. The export built here drives the
values to the bounds that ``bit_widths`` are proven from (SPEC.md section 4):

- the embedding's weights are the largest int8 (``-128`` on half the channels, ``+127`` on
  the other half) and its bias zero, so a white image gives the embedding-current bound
  (exactly on the ``-128`` channels, which the accumulator holds as is); with almost no leak
  (``leak_shift`` 31, the largest: ``V >> 31`` is -1 or 0) a negative channel never fires
  and its membrane sinks by that current every step, to ``T - 1`` short of the membrane
  proof's ``T`` times the largest current, so a membrane one bit narrower wraps after
  ``T - 1`` steps and fires at the last;
- one channel of every LIF layer but the attention's (fixed at ``2**attn_shift``) and the
  head input's has its threshold at the membrane limit ``2**(membrane - 1) - 1`` (it never
  fires; one bit narrower, it reads -1 and always does);
- the layers after it have rows of ``+127`` (the stream writers all of them, so the stream
  and then the head input fire on every channel) and one row of ``-128`` (a membrane that
  only sinks), and the head adds a bias of the sign of its row, so the logits pass
  ``2**(logit - 2)``.

White, black and half-white images then go through the core and the golden model; logits,
class and per-layer spike counts must agree exactly.
"""

import numpy as np
import pytest
import torch

from stepvit.model.export import load_export
from stepvit.model.export.writer import write_export
from stepvit.model.golden import GoldenModel, lif_step
from stepvit.rtl.core_sim import simulate_core

SMALL = dict(image_shape=[1, 4, 4], patch=2, dim=8, heads=2, depth=1, mlp_dim=16,
             num_classes=3, t_max=4)
#: The stream writers: all rows +127, so the stream is positive on every channel.
WRITERS = ("attn.proj", "mlp.fc2")
#: The channel of each layer whose threshold is the membrane limit.
AT_LIMIT = 1
EMBED_AT_LIMIT = 7
HEAD_BIAS = 1000


def rewrite(base, directory, arrays, thresholds):
    """Write ``base`` with other arrays and thresholds (widths, checksum and hash redone)."""
    manifest = base.manifest
    return load_export(write_export(
        directory, name="worst-case", architecture=manifest["architecture"],
        t_max=manifest["t_max"], neuron=manifest["neuron"],
        timestep_mask=base.timestep_mask, thresholds=thresholds, arrays=arrays))


@pytest.fixture(scope="module")
def worst_case_export(tmp_path_factory, random_export):
    directory = tmp_path_factory.mktemp("worst")
    base = load_export(random_export(
        directory / "base", seed=7, leak_shift=31, attn_shift=3,
        mask=np.ones((2 * SMALL["depth"] + 2, SMALL["t_max"]), dtype=np.int64), **SMALL))
    arrays = {key: value.astype(np.int64) for key, value in base.arrays.items()}
    dim = SMALL["dim"]
    embed = arrays["embed.weight"]
    embed[: dim // 2], embed[dim // 2:] = -128, 127
    arrays["embed.bias"][:] = 0
    arrays["stream_spike"][:] = 100
    for key in arrays:
        layer = key.removesuffix(".weight")
        if key.startswith("blocks.") and layer != key:
            arrays[key][:] = 127
            if not layer.endswith(WRITERS):
                arrays[key][0] = -128
            arrays[f"{layer}.bias"][:] = 0
    head = arrays["head.weight"]
    head[0], head[1], head[2, ::2], head[2, 1::2] = -128, 127, -128, 127
    arrays["head.bias"][:] = [-HEAD_BIAS, HEAD_BIAS, 0]

    white_current = 127 * 255 * embed.shape[1]
    thresholds = {name: np.ones_like(values) for name, values in base.thresholds.items()}
    for name, values in base.thresholds.items():
        if name.endswith("attn.attn"):
            thresholds[name] = values  # fixed at 2**attn_shift by the format
    thresholds["embed"][dim // 2:] = white_current  # fires at every step of a white patch
    widths = rewrite(base, directory / "widths", arrays, thresholds).bit_widths
    limit = 2 ** (widths["membrane"] - 1) - 1
    for name, values in thresholds.items():
        if name == "embed":
            values[EMBED_AT_LIMIT] = limit
        elif not name.endswith(("attn.attn", "head.in")):
            values[AT_LIMIT] = limit
    export = rewrite(base, directory / "export", arrays, thresholds)
    assert export.bit_widths == widths, "a threshold at the limit must not widen the membrane"
    return export


@pytest.fixture(scope="module")
def extreme_images():
    images = np.zeros((3, *SMALL["image_shape"]), dtype=np.uint8)
    images[0] = 255
    images[2, :, : SMALL["image_shape"][1] // 2] = 255
    return images


def fits(value, bits):
    return -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)


def test_the_export_reaches_the_top_bit_of_each_width_it_claims(worst_case_export,
                                                                extreme_images):
    """The golden values need the full declared width: one bit fewer would not hold them.

    Logits, the embedding current of both signs, and the membrane of a negative embedding
    channel after ``T - 1`` steps (read again at the last step), each computed with the
    golden model's own arithmetic.
    """
    export = worst_case_export
    golden = GoldenModel(export)
    result = golden.run(extreme_images, masks=export.timestep_mask)
    widths = export.bit_widths
    assert not fits(int(result.logits.abs().max()), widths["logit"] - 1)
    current, _ = golden.embed_current(torch.from_numpy(extreme_images[:1]).to(torch.int64))
    for extreme in (int(current.min()), int(current.max())):
        assert not fits(extreme, widths["embed_current"] - 1), extreme
    membrane = torch.zeros_like(current)
    for _ in range(export.t_max - 1):
        membrane, _ = lif_step(membrane, current, golden.thresholds["embed"],
                               golden.leak_shift, golden.reset)
    assert not fits(int(membrane.min()), widths["membrane"] - 1), int(membrane.min())
    assert result.layer_spike_totals()[0].min() > 0, "every layer spikes on the white image"


@pytest.mark.parametrize("lanes", [1, 2])
def test_core_matches_golden_at_the_worst_case(worst_case_export, extreme_images, lanes):
    """Logits, class and every layer's spike count agree with widths filled to the top bit."""
    export = worst_case_export
    golden = GoldenModel(export).run(extreme_images, masks=export.timestep_mask)
    totals = golden.layer_spike_totals()
    runs = simulate_core(export, extreme_images, export.timestep_mask, lanes=lanes)
    for index, run in enumerate(runs):
        where = f"image {index}, lanes {lanes}"
        assert run.logits == golden.logits[index].tolist(), where
        assert run.predicted == int(golden.predicted[index]), where
        assert run.spike_counts == totals[index].tolist(), where
