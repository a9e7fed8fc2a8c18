"""The convolutional stem's integer semantics (SPEC.md section 5): the golden model against a
loop-by-loop reference, the quantizer and the emulation against the golden model, and the
export contract of schema version 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stepvit.model.export import load_export
from stepvit.model.export.errors import ExportError, StepvitError
from stepvit.model.export.stem import complete_stem, stem_stages
from stepvit.model.export.writer import write_export
from stepvit.model.finetune import IntegerEmulation
from stepvit.model.golden import GoldenModel
from stepvit.model.network import SpikingViT
from stepvit.model.quantize import quantize

#: Random stem shapes: pools before, after and none, strides, RPE on and off, odd image
#: sizes, one and three input channels.
STEMS = {
    "pool-before-rpe": ((1, 9, 7), {"stages": [{"channels": 3, "pool": "before"},
                                               {"channels": 4}], "rpe": True}),
    "pool-after-stride": ((3, 8, 6), {"stages": [{"channels": 4, "stride": 2},
                                                 {"channels": 4, "pool": "after"}],
                                      "rpe": False}),
    "pool-both-kernel-1": ((1, 7, 9), {"stages": [{"channels": 2, "pool": "after"},
                                                  {"channels": 3, "kernel": 1, "padding": 0},
                                                  {"channels": 4, "pool": "before"}],
                                       "rpe": True}),
}


def shape_args(image_shape: tuple[int, int, int], stem: dict) -> dict:
    """Return the random-export keywords of a small network on ``stem``."""
    dim = stem["stages"][-1]["channels"]
    return dict(image_shape=list(image_shape), patch=1, dim=dim, heads=2, depth=1,
                mlp_dim=8, num_classes=3, t_max=3, stem=stem)


def reached(stage, y: int, x: int) -> int:
    """Return how many conv output positions of ``stage`` have ``(y, x)`` in their window."""
    return sum(1 for oy in range(stage.conv_shape[1]) for ox in range(stage.conv_shape[2])
               if 0 <= y - (oy * stage.stride - stage.padding) < stage.kernel
               and 0 <= x - (ox * stage.stride - stage.padding) < stage.kernel)


def reference_stem(export, image: np.ndarray,
                   mask: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """Return the stream ``X [N, D]`` of every step, computed one value at a time (SPEC §5),
    and the accumulates of the stem's convs on spikes at every step, spike by spike."""
    arch = export.arch
    stem = arch["stem"]
    pool = stem["pool"]
    stages = stem_stages(arch["image_shape"], stem)
    weights = {key: value.astype(np.int64) for key, value in export.arrays.items()}
    thresholds = export.thresholds
    leak = export.neuron["leak_shift"]
    soft = export.neuron["reset"] == "soft"

    work = [0] * export.t_max

    def conv(stage, inputs: np.ndarray, step: int | None = None) -> np.ndarray:
        weight = weights[f"{stage.name}.weight"]
        if step is not None:
            work[step] += sum(int(inputs[c, y, x]) * reached(stage, y, x) * stage.conv_shape[0]
                              for c, y, x in np.ndindex(*inputs.shape))
        out = np.zeros(stage.conv_shape, dtype=np.int64)
        cin, height, width = inputs.shape
        for o in range(stage.conv_shape[0]):
            for y in range(stage.conv_shape[1]):
                for x in range(stage.conv_shape[2]):
                    total = int(weights[f"{stage.name}.bias"][o])
                    for c in range(cin):
                        for ky in range(stage.kernel):
                            for kx in range(stage.kernel):
                                iy = y * stage.stride + ky - stage.padding
                                ix = x * stage.stride + kx - stage.padding
                                if 0 <= iy < height and 0 <= ix < width:
                                    total += int(weight[o, c, ky, kx]) * int(inputs[c, iy, ix])
                    out[o, y, x] = total
        return out

    def max_pool(maps: np.ndarray) -> np.ndarray:
        channels, height, width = maps.shape
        out_h = (height + 2 * pool["padding"] - pool["kernel"]) // pool["stride"] + 1
        out_w = (width + 2 * pool["padding"] - pool["kernel"]) // pool["stride"] + 1
        out = np.zeros((channels, out_h, out_w), dtype=np.int64)
        for c in range(channels):
            for y in range(out_h):
                for x in range(out_w):
                    y0 = y * pool["stride"] - pool["padding"]
                    x0 = x * pool["stride"] - pool["padding"]
                    window = maps[c, max(y0, 0):y0 + pool["kernel"],
                                  max(x0, 0):x0 + pool["kernel"]]
                    out[c, y, x] = window.max()
        return out

    membranes = {stage.name: np.zeros(stage.lif_shape, dtype=np.int64) for stage in stages}

    def lif(stage, current: np.ndarray) -> np.ndarray:
        threshold = thresholds[stage.name][:, None, None]
        v = membranes[stage.name]
        h = v - (v >> leak) + current
        fired = (h >= threshold).astype(np.int64)
        membranes[stage.name] = h - fired * threshold if soft else h * (1 - fired)
        return fired

    first = stages[0]
    first_current = conv(first, image.astype(np.int64))
    if first.pool == "before":
        first_current = max_pool(first_current)
    convs = [s for s in stages if s.name != "stem.rpe"]
    rpe = stages[-1] if stages[-1].name == "stem.rpe" else None
    streams = []
    for step in range(export.t_max):
        spikes = None
        for row, stage in enumerate(convs):
            if not mask[row, step]:
                spikes = np.zeros(stage.out_shape, dtype=np.int64)
                continue
            if row == 0:
                current = first_current
            else:
                current = conv(stage, spikes, step)
                current = max_pool(current) if stage.pool == "before" else current
            fired = lif(stage, current)
            spikes = max_pool(fired) if stage.pool == "after" else fired
        tokens = spikes.copy()
        if rpe is not None and mask[len(convs), step]:
            tokens += lif(rpe, conv(rpe, spikes, step))
        channels = tokens.shape[0]
        streams.append(tokens.reshape(channels, -1).T * weights["stream_spike"][None, :])
    return streams, work


@pytest.fixture(scope="module", params=sorted(STEMS))
def stem_export(request, tmp_path_factory, random_export):
    image_shape, stem = STEMS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    return load_export(random_export(folder, seed=3, **shape_args(image_shape, stem)))


def images_for(export, count: int, seed: int = 1) -> np.ndarray:
    shape = export.arch["image_shape"]
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def golden_streams(golden: GoldenModel, images: np.ndarray,
                   mask: np.ndarray) -> tuple[list[np.ndarray], torch.Tensor]:
    """Return the golden stem's stream at every step and its ``[B, T]`` stem accumulates."""
    pixels = torch.from_numpy(images).to(torch.int64)
    first_current, _ = golden.stem_current(pixels)
    state = golden.new_state(len(images))
    streams = [golden.stem_step(state, mask, first_current, step).numpy()
               for step in range(golden.t_max)]
    return streams, state.stem_ac_ops


@pytest.mark.parametrize("mask_kind", ["trained", "all-on"])
def test_golden_stem_is_the_loop_reference(stem_export, mask_kind: str) -> None:
    golden = GoldenModel(stem_export)
    mask = stem_export.timestep_mask if mask_kind == "trained" \
        else np.ones_like(stem_export.timestep_mask)
    images = images_for(stem_export, 3)
    streams, work = golden_streams(golden, images, mask)
    assert any(stream.any() for stream in streams), "the stem never reached the tokens"
    for index, image in enumerate(images):
        expected, expected_work = reference_stem(stem_export, image, mask)
        for step in range(golden.t_max):
            np.testing.assert_array_equal(streams[step][index], expected[step])
        assert work[index].tolist() == expected_work


def test_the_loop_comparison_sees_one_corrupt_weight(stem_export) -> None:
    """The comparison above can fail: one corrupt value (a stage-0 bias, moved by two
    thresholds) changes the stream."""
    mask = np.ones_like(stem_export.timestep_mask)
    images = images_for(stem_export, 2)
    arrays = dict(stem_export.arrays)
    bias = arrays["stem.0.bias"].copy()
    bias[0] += 2 * stem_export.thresholds["stem.0"][0]
    arrays["stem.0.bias"] = bias
    corrupt = type(stem_export)(stem_export.path, stem_export.manifest, arrays)
    streams, _ = golden_streams(GoldenModel(corrupt), images, mask)
    assert any(not np.array_equal(streams[step][index],
                                  reference_stem(stem_export, image, mask)[0][step])
               for index, image in enumerate(images) for step in range(stem_export.t_max))


def test_first_stage_work_is_counted_bit_by_bit(stem_export) -> None:
    """``embed_ac_ops`` with a stem: each set pixel bit, times the stage-0 outputs it reaches
    (borders excluded), times Cout; ``ac_ops`` includes ``stem_ac_ops``."""
    golden = GoldenModel(stem_export)
    images = images_for(stem_export, 2)
    result = golden.run(images, masks=np.ones_like(stem_export.timestep_mask))
    first = golden.stem[0]
    for index, image in enumerate(images):
        expected = sum(bin(int(image[c, y, x])).count("1") * reached(first, y, x)
                       * first.conv_shape[0] for c, y, x in np.ndindex(*image.shape))
        assert int(result.work["embed_ac_ops"][index]) == expected
    assert bool((result.work["stem_ac_ops"] > 0).all())
    assert bool((result.work["ac_ops"] > result.work["stem_ac_ops"]).all())


def trained_like(image_shape: tuple[int, int, int], stem: dict, seed: int) -> SpikingViT:
    """Return a float stem network with random weights, BatchNorm statistics and mask."""
    torch.manual_seed(seed)
    dim = stem["stages"][-1]["channels"]
    model = SpikingViT(image_shape, 1, dim, 2, 1, 8, 3, 3, reset="soft", stem=stem)
    model.train()
    model(torch.randint(0, 256, (32, *image_shape), dtype=torch.uint8))
    with torch.no_grad():
        model.timestep_scores.copy_(torch.randn_like(model.timestep_scores) + 0.5)
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(0.0, 1.0)
    return model.eval()


@pytest.mark.parametrize("name", sorted(STEMS))
def test_quantized_stem_emulation_is_the_golden_model(tmp_path: Path, name: str) -> None:
    """The quantizer's export run by the golden model = the float64 emulation that the
    quantization-aware epochs train, logit for logit (a module that never runs included)."""
    image_shape, stem = STEMS[name]
    model = trained_like(image_shape, stem, seed=len(name))
    network = quantize(model, ["a", "b", "c"])
    export = load_export(write_export(tmp_path, name="t", **network.writer_arguments()))
    assert export.schema_version == 2
    images = torch.randint(0, 256, (8, *image_shape), dtype=torch.uint8)
    golden = GoldenModel(export).run(images.numpy())
    with torch.no_grad():
        logits, _ = IntegerEmulation(model.double()).integer_logits(images)
    assert torch.equal(logits.to(torch.int64), golden.logits)


def test_stem_export_contract_refusals(stem_export, tmp_path: Path) -> None:
    """A schema-2 manifest is checked as strictly as a schema-1 one: each refusal names the
    field."""
    import yaml

    def refused(change, message: str) -> None:
        folder = tmp_path / str(abs(hash(message)))
        folder.mkdir()
        manifest = yaml.safe_load((stem_export.path / "manifest.yaml").read_text())
        change(manifest)
        (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        (folder / "weights.npz").write_bytes((stem_export.path / "weights.npz").read_bytes())
        with pytest.raises(ExportError) as caught:
            load_export(folder)
        assert message in str(caught.value)

    refused(lambda m: m["architecture"].update(patch=2), "architecture.patch: expected null")
    refused(lambda m: m["architecture"].update(tokens=m["architecture"]["tokens"] + 1),
            "architecture.tokens: expected")
    refused(lambda m: m["architecture"]["stem"]["stages"][0].update(pool="sideways"),
            "architecture.stem.stages[0].pool")
    refused(lambda m: m["architecture"]["stem"].pop("rpe"), "architecture.stem: expected a")
    refused(lambda m: m.update(schema_version=1), "architecture.stem: unexpected key")


def test_stem_random_export_refuses_a_stem_that_does_not_fit(tmp_path: Path,
                                                             random_export) -> None:
    stem = {"stages": [{"channels": 4, "padding": 0}, {"channels": 4, "pool": "after"}]}
    with pytest.raises(StepvitError, match="leaves no pixel"):
        random_export(tmp_path, **shape_args((1, 2, 2), stem))
    assert complete_stem(stem)["rpe"] is False


def test_the_papers_network_runs_through_the_golden_model(tmp_path: Path) -> None:
    """A random export of spikformer-4-384.yaml (its SPS stem included) is valid, fits the
    hardware's 32-bit registers, and the golden model runs it at budgets 1 and full."""
    from stepvit.host.cli import main

    config = Path(__file__).parents[2] / "model" / "configs" / "spikformer-4-384.yaml"
    assert main(["random-export", "--config", str(config), "--out", str(tmp_path)]) == 0
    export = load_export(tmp_path)
    assert export.schema_version == 2 and export.arch["tokens"] == 64
    assert max(export.bit_widths.values()) <= 32
    golden = GoldenModel(export)
    image = np.random.default_rng(0).integers(0, 256, size=(1, 3, 32, 32), dtype=np.uint8)
    low, full = golden.run(image, budget=1), golden.run(image)
    assert list(low.spikes) == export.layer_names()
    assert int(low.work["ac_ops"][0]) < int(full.work["ac_ops"][0])
    assert int(full.work["stem_ac_ops"][0]) > 0


def test_the_golden_vectors_keep_the_stems_work(stem_export, tmp_path):
    from stepvit.model.export.vectors import STEM_WORK_KEY, load_golden_vectors
    from stepvit.model.export_cli import write_golden_vectors_of

    golden = GoldenModel(stem_export)
    images = torch.from_numpy(images_for(stem_export, 3))
    write_golden_vectors_of(Path(stem_export.path) / "golden_vectors.npz", golden, images,
                            torch.zeros(3, dtype=torch.int64))
    vectors = load_golden_vectors(stem_export)
    for index, budget in enumerate(vectors.budgets):
        expected = golden.run(images, budget=budget).work[STEM_WORK_KEY].numpy()
        np.testing.assert_array_equal(vectors.outputs[STEM_WORK_KEY][index], expected)
    assert vectors.outputs[STEM_WORK_KEY].sum() > 0
