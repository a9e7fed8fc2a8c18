"""A design whose residual stream is in DDR (``stream_ddr``), as Verilog under Icarus.

The accelerator streams its weights and keeps no stream buffer: the stream of every step is
in an activation buffer the testbench gives it (``ACTIVATIONS_ADDR``), read through the
tiles' port and written through ``m_axi``'s write channels, against the simulated DDR's
two ports with the PYNQ-Z2's figures (random bytes until written). Bit-exact with the golden
model at budget 1 and at the full budget, with and without a convolutional stem; the
buffer's size is the register's; the stream's writes are every word of the passes that
store it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepvit.host import cli
from stepvit.model.export import Export, load_export
from stepvit.rtl.generate import memories_of, to_verilog
from stepvit.rtl.top import StepvitAccel
from stepvit.sim.runner import Simulation

SHAPE = (1, 4, 4)
LANES = 4
IMAGES = 2
#: A convolutional stem (tests/sim/test_sim_ddr_stream.py's).
STEM_SHAPE = (1, 9, 9)
STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 4},
                   {"channels": 8, "pool": "after"}], "rpe": True}


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    return load_export(random_export(tmp_path_factory.mktemp("export"), image_shape=SHAPE,
                                     seed=0))


@pytest.fixture(scope="module")
def simulation(export: Export, tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    return Simulation(export, tmp_path_factory.mktemp("activations"), lanes=LANES,
                      weights="ddr", stream_weights=True, stream_ddr=True)


def test_a_design_with_its_stream_in_ddr_has_no_stream_memory_and_a_write_port(
        export: Export) -> None:
    design = StepvitAccel(export, lanes=LANES, weights="ddr", stream_weights=True,
                          stream_ddr=True)
    verilog = to_verilog(design)
    def streams(text: str) -> list[str]:  # the stream buffer: ``stream``, ``\\stream$<n>``
        return [memory["name"] for memory in memories_of(text)
                if memory["name"].lstrip("\\").split("$")[0] == "stream"]

    assert streams(verilog) == []
    assert len(streams(to_verilog(StepvitAccel(export, lanes=LANES, weights="ddr",
                                               stream_weights=True)))) == 1
    assert {"m_axi_awvalid", "m_axi_wdata", "m_axi_bready"} <= set(design.signature.members)


def test_stream_ddr_needs_streamed_weights(export: Export) -> None:
    with pytest.raises(ValueError, match="stream_ddr needs stream_weights"):
        StepvitAccel(export, lanes=LANES, weights="ddr", stream_ddr=True)


@pytest.mark.parametrize("budget", [1, None])
def test_a_stream_in_ddr_is_bit_exact(simulation: Simulation, export: Export,
                                      budget: int | None) -> None:
    images = np.random.default_rng(1).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)
    mask_rows = export.budget_mask(budget)
    results = simulation.run("ddr_weights", simulation.ddr_config(export, images, mask_rows))
    assert not results["failures"]  # every packet the golden model's, ACTIVATION_BYTES too
    core = StepvitAccel(export, lanes=LANES, weights="ddr", stream_weights=True,
                        stream_ddr=True).core
    plan, unit = core.plan, core.stream_unit
    beats = unit.word_bytes * 8 // simulation.data_width
    stored = sum(int(np.sum(mask_rows[p["module"]])) * plan.geometry.tokens * p["chunks"]
                 for p in plan.passes
                 if p.get("sink") is not None and (p["sink"].name == "STORE_STREAM"
                                                   or p.get("to_stream")))
    assert results["written_beats"] == IMAGES * stored * beats
    assert results["stream_stalls"] > 0


@pytest.mark.parametrize("maps", [False, True], ids=["maps-on-chip", "maps-in-ddr"])
def test_a_stem_designs_stream_in_ddr_is_bit_exact(tmp_path: Path, random_export,
                                                   maps: bool) -> None:
    """With ``maps``, the stem's spike maps are in the activation buffer too, written a
    chunk of a position at a time with byte strobes (rtl/stem_map_ddr.py)."""
    export = load_export(random_export(tmp_path / "stem", image_shape=STEM_SHAPE, patch=1,
                                       dim=8, stem=STEM, seed=1))
    simulation = Simulation(export, tmp_path / "build", lanes=LANES, weights="ddr",
                            stream_weights=True, stem_chunk_major=True, stream_ddr=True,
                            stem_maps_ddr=maps)
    images = np.random.default_rng(2).integers(0, 256, (IMAGES, *STEM_SHAPE), dtype=np.uint8)
    results = simulation.run("ddr_weights", simulation.ddr_config(
        export, images, export.budget_mask(None)))
    assert not results["failures"]  # every packet the golden model's, ACTIVATION_BYTES too
    assert results["written_beats"] > 0
    assert (results["stem_map_stalls"] > 0) == maps
    verilog = (tmp_path / "build" / "rtl" / "stepvit_accel.v").read_text()
    out_maps = [memory["name"] for memory in memories_of(verilog)
                if "out_map" in memory["name"]]
    assert (out_maps == []) == maps


def test_rtl_refuses_a_stream_in_ddr_beside_a_step_major_stem(
        tmp_path: Path, random_export, capsys: pytest.CaptureFixture) -> None:
    export = random_export(tmp_path / "stem", image_shape=STEM_SHAPE, patch=1, dim=8,
                           stem=STEM, seed=1)
    argv = ["rtl", str(export), "--build", str(tmp_path / "build"), "--lanes", str(LANES),
            "--weights", "ddr", "--stream-weights", "--stream-ddr"]
    assert cli.main(argv) == 2
    assert "--stream-ddr: a stem design keeps the one stream buffer" in capsys.readouterr().err
    assert cli.main(argv[:2] + ["--stream-ddr", "--build", str(tmp_path / "rom")]) == 2
    assert "--stream-ddr: the stream's reads share the streamed tiles'" in \
        capsys.readouterr().err
    plain = random_export(tmp_path / "plain", image_shape=SHAPE, seed=0)
    assert cli.main(["rtl", str(plain)] + argv[2:] + ["--stem-maps-ddr"]) == 2
    assert "--stem-maps-ddr: only a convolutional stem that runs chunk by chunk" in \
        capsys.readouterr().err
    assert cli.main(argv[:-1] + ["--stem-maps-ddr"]) == 2
    assert "--stem-maps-ddr: the stem's maps go into the stream's activation buffer" in \
        capsys.readouterr().err
