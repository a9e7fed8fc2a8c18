"""The weights-from-DDR plan: the weights it streams, and how batch and memory weigh."""

from __future__ import annotations

import numpy as np
import pytest

from stepvit.model.export import load_export
from stepvit.model.export.stem import complete_stem
from stepvit.sim.ddr_plan import architecture_of, layer_works, plan

STEM = complete_stem({"stages": [{"channels": 4}, {"channels": 8, "pool": "after"}],
                      "rpe": True})


@pytest.fixture(scope="module", params=["patch", "stem"])
def export(request, tmp_path_factory, random_export):
    shape = dict(image_shape=[1, 8, 8], patch=2, dim=8, heads=2, depth=2, mlp_dim=16,
                 num_classes=3, t_max=4)
    if request.param == "stem":
        shape.update(patch=1, stem=STEM)
    return load_export(random_export(tmp_path_factory.mktemp("ddr"), seed=5, **shape))


def test_the_plan_streams_every_weight_of_the_export(export) -> None:
    int8 = sum(array.size for array in export.arrays.values() if array.dtype == np.int8)
    layers = layer_works(export.arch)
    assert sum(layer.int8 for layer in layers) == int8
    assert all(layer.weight_bytes > layer.int8 for layer in layers)  # biases, thresholds


def test_spikformer_4_384_streams_its_9_28_million_weights() -> None:
    arch = architecture_of("model/configs/spikformer-4-384.yaml")
    assert arch["tokens"] == 64
    assert sum(layer.int8 for layer in layer_works(arch)) == 9_281_040


def test_a_batch_shares_the_weights_and_not_the_compute(export) -> None:
    one, many = (plan(export.arch, batch=batch, lanes=4, bytes_per_cycle=0.05)
                 for batch in (1, 16))
    assert many["weight_bytes"] == pytest.approx(one["weight_bytes"] / 16)
    assert many["compute"] == pytest.approx(one["compute"])
    assert many["stall"] < one["stall"]  # a slow memory: the weights were the stall
    assert one["cycles"] == pytest.approx(one["compute"] + one["stall"])


def test_a_layer_waits_for_its_transfer_or_its_compute(export) -> None:
    fast = plan(export.arch, batch=1, lanes=1, bytes_per_cycle=1e9, latency=0)
    assert fast["stall"] == pytest.approx(0, abs=1e-6)
    slow = plan(export.arch, batch=1, lanes=1, bytes_per_cycle=1e-3, latency=0)
    moved = slow["weight_bytes"] + slow["activation_bytes"]
    assert slow["cycles"] == pytest.approx(moved / 1e-3, rel=1e-6)


def test_inputs_too_large_for_the_buffer_are_read_again_for_every_tile(export) -> None:
    kept = plan(export.arch, batch=4, lanes=2, input_buffer=10**9)
    again = plan(export.arch, batch=4, lanes=2, input_buffer=0)
    assert again["activation_bytes"] > kept["activation_bytes"]
    more_lanes = plan(export.arch, batch=4, lanes=8, input_buffer=0)
    assert more_lanes["activation_bytes"] < again["activation_bytes"]  # fewer tiles


def test_more_lanes_compute_faster(export) -> None:
    assert (plan(export.arch, batch=1, lanes=8)["compute"]
            < plan(export.arch, batch=1, lanes=2)["compute"])


def test_a_stream_of_images_costs_the_slower_of_the_stem_and_the_core(export) -> None:
    result = plan(export.arch, batch=1, lanes=4, stem_lanes=2)
    assert result["stem_cycles"] + result["core_cycles"] == pytest.approx(result["cycles"])
    assert result["stream_cycles"] == max(result["stem_cycles"], result["core_cycles"])
    if export.arch.get("stem") is None:
        assert result["stem_cycles"] == 0 and result["stream_cycles"] == result["cycles"]
        return
    assert 0 < result["stream_cycles"] < result["cycles"]  # they overlap
    faster_stem = plan(export.arch, batch=1, lanes=4, stem_lanes=8)
    assert faster_stem["stem_cycles"] < result["stem_cycles"]
    assert faster_stem["core_cycles"] == pytest.approx(result["core_cycles"])


def test_a_bad_batch_is_refused(export) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan(export.arch, batch=0, lanes=4)


def test_at_the_golden_models_rates_the_plan_counts_its_accumulates(export) -> None:
    from stepvit.model.golden import GoldenModel
    from stepvit.sim.ddr_plan import golden_rates

    images = np.random.default_rng(1).integers(0, 256, (6, *export.arch["image_shape"]),
                                               dtype=np.uint8)
    work = GoldenModel(export).run(images).work
    result = plan(export.arch, batch=1, lanes=4, measured=golden_rates(export, images))
    total = sum(layer["accumulates"] for layer in result["layers"])
    golden = float((work["ac_ops"] + work["embed_ac_ops"]).float().mean())
    # the plan spreads a layer's spikes evenly over its positions (a conv's borders reach
    # fewer outputs) and leaves out the Kᵀ·V accumulates: on 8x8 maps, where borders weigh
    # most, random exports of these shapes at seeds 0-4 came to 0.98-1.13 of the golden work
    # (Spikformer-4-384's random export 1.01, the Fashion-MNIST stem export 0.98)
    assert total == pytest.approx(golden, rel=0.15)
    blind = plan(export.arch, batch=1, lanes=4, spike_rate=0.9, pixel_rate=0.9)
    assert sum(layer["accumulates"] for layer in blind["layers"]) != pytest.approx(golden,
                                                                                   rel=0.15)


def test_a_stage_pooled_after_its_lif_hands_on_its_pooled_map(tmp_path, random_export) -> None:
    from stepvit.model.golden import GoldenModel
    from stepvit.sim.ddr_plan import golden_rates

    export = load_export(random_export(
        tmp_path, seed=2, image_shape=[1, 8, 8], patch=1, dim=8, heads=2, depth=1,
        mlp_dim=8, num_classes=3, t_max=2, stem=STEM, mask=np.ones((6, 2), dtype=np.uint8)))
    images = np.random.default_rng(2).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    rates, steps = golden_rates(export, images)
    assert steps["stem.1"] == 2.0
    spikes = GoldenModel(export).run(images).spikes["stem.1"]
    lif_rate = float(spikes.sum()) / (6 * 8 * 8 * 8 * 2)  # 8 channels of 8x8, 2 steps
    assert 0 < lif_rate < 1
    # every LIF position lies in at most 4 of the 16 pool windows (3x3, stride 2): the
    # pooled map's share of ones is at least the LIF's, and more where windows overlap
    assert rates["stem.1"] > lif_rate
    assert rates["stem.0"] == pytest.approx(float(GoldenModel(export).run(images)
                                                  .spikes["stem.0"].sum()) / (6 * 4 * 64 * 2))


CONFIG = "model/configs/spikformer-4-384.yaml"


def planned(capsys, *arguments: str) -> dict:
    """Run ``python -m stepvit.sim.ddr_plan`` on Spikformer-4-384 at batch 1; its JSON line."""
    import json
    from pathlib import Path

    from stepvit.sim.ddr_plan import main

    main([str(Path(__file__).resolve().parents[2] / CONFIG), "--batch", "1", *arguments])
    return json.loads(capsys.readouterr().out)


def test_the_memory_figures_come_from_the_board_unless_a_flag_gives_them(
        capsys, tmp_path) -> None:
    import yaml

    from stepvit.rtl.boards import BOARDS_DIR, load_board

    kv260 = load_board("kv260").ddr
    on_kv260 = planned(capsys, "--board", "kv260")
    assert (on_kv260["bytes_per_cycle"], on_kv260["latency"]) == (kv260.bytes_per_cycle,
                                                                  kv260.latency_cycles)
    assert planned(capsys, "--board", "kv260", "--latency", "7")["latency"] == 7
    assert planned(capsys, "--board", "kv260", "--bytes-per-cycle", "2")["bytes_per_cycle"] == 2
    # a board whose port moves less: the plan's stall grows with the board's figure
    fields = yaml.safe_load((BOARDS_DIR / "pynq-z2" / "board.yaml").read_text())
    fields["ddr"]["bytes_per_cycle"] = 0.5
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(fields))
    slow = planned(capsys, "--board", str(tmp_path))
    assert slow["bytes_per_cycle"] == 0.5
    assert slow["stall"] > planned(capsys, "--board", "pynq-z2")["stall"]


def test_an_unknown_board_is_refused(capsys) -> None:
    from stepvit.model.export import StepvitError

    with pytest.raises(StepvitError, match="unknown board 'nexys'"):
        planned(capsys, "--board", "nexys")
