"""``spike_word_bits`` through everything that builds, records, rebuilds or sizes a design.

``stepvit rtl --spike-word-bits N`` generates a core whose spike maps hold a token's spikes
as words of at most N bits; the build folder's record and the report say so (only then),
a ddr design is reused only at its own value, ``stepvit overlay`` and ``stepvit sim`` take
it from the record, and the sizing gives the segmented memories and a narrower walk. The
exports are the tiny random network (dim 8, MLP 16, patches of 2 x 2 pixels: 32 bit
planes) and, for the sizing alone, a wider one (dim 64, 4 heads, MLP 128).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepvit.host import cli
from stepvit.model.export import Export, load_export
from stepvit.rtl import sizing
from stepvit.rtl.build_folder import DESIGN_FILE, record_design, spike_word_bits_of
from stepvit.rtl.core_plan import CoreGeometry, CorePlan
from stepvit.rtl.sizing import LUT_MODEL, choose_lanes, core_resources, memory_shapes
from stepvit.rtl.synth import board_parameters

LANES = 4
#: Cuts the MLP's 16-bit words in two and the 32 patch bit planes in four (dim's 8: one).
WORDS = 8
WIDE = dict(image_shape=[1, 4, 4], patch=2, dim=64, heads=4, depth=1, mlp_dim=128,
            num_classes=3, t_max=2)

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, random_export) -> dict[str, Export]:
    folder = tmp_path_factory.mktemp("exports")
    return {name: load_export(random_export(folder / name, seed=seed))
            for name, seed in (("a", 0), ("b", 2))}


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    return load_export(random_export(tmp_path_factory.mktemp("wide"), seed=1, **WIDE))


def rtl(export: Export, build: Path, *extra: str) -> int:
    return cli.main(["rtl", str(export.path), "--build", str(build), *extra])


def error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def spike_memories(report: dict) -> dict[str, tuple[int, int]]:
    return {memory["name"]: (memory["width"], memory["depth"]) for memory in report["memories"]
            if memory["name"].startswith("spikes_")}


def test_rtl_builds_records_and_reports_the_spike_word_bits(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    export = exports["a"]
    build = tmp_path / "build"
    assert rtl(export, build, "--lanes", str(LANES), "--spike-word-bits", str(WORDS)) == 0
    summary = json.loads(capsys.readouterr().out)
    record = json.loads((build / DESIGN_FILE).read_text())
    report = json.loads((build / "report.json").read_text())
    assert record["spike_word_bits"] == report["spike_word_bits"] == WORDS
    assert summary["spike_word_bits"] == WORDS and spike_word_bits_of(build) == WORDS
    steps_tokens = export.t_max * export.arch["tokens"]
    maps = spike_memories(report)
    # the four dim maps: one word of 8 a token; the hidden map: two words of 8
    assert {name: maps[name] for name in maps if name != "spikes_hidden"} == {
        f"spikes_buf{i}": (WORDS, steps_tokens) for i in range(4)}
    assert maps["spikes_hidden"] == (WORDS, 2 * steps_tokens)
    # without the option: nothing recorded, nothing reported, one word a token
    plain = tmp_path / "plain"
    assert rtl(export, plain, "--lanes", str(LANES)) == 0
    assert "spike_word_bits" not in json.loads((plain / DESIGN_FILE).read_text())
    report = json.loads((plain / "report.json").read_text())
    assert "spike_word_bits" not in report
    assert spike_memories(report)["spikes_hidden"] == (16, steps_tokens)
    assert spike_word_bits_of(plain) is None


@pytest.mark.parametrize(("words", "reason"), [
    (6, "spike_word_bits (6) must be a multiple of the lanes (4)"),
    (12, "spike_word_bits (12) must be a multiple of the 8 bit planes of a pixel (8)"),
    (0, "spike_word_bits must be a positive integer, not 0"),
])
def test_a_value_the_geometry_refuses_is_one_line(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture,
        words: int, reason: str) -> None:
    build = tmp_path / "build"
    assert rtl(exports["a"], build, "--lanes", str(LANES), "--spike-word-bits",
               str(words)) == 2
    assert error_lines(capsys) == [f"stepvit rtl: error: --spike-word-bits: {reason}"]
    assert not (build / "stepvit_accel.v").exists()


def test_a_value_no_lane_count_takes_is_refused_before_the_sizing(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """With --board and no --lanes: a value no lane count takes (not whole heads of 4
    channels) is refused in one line; one some take sizes only those lanes."""
    export = exports["a"]
    assert rtl(export, tmp_path / "no", "--board", "pynq-z2", "--spike-word-bits", "2") == 2
    assert error_lines(capsys) == [
        "stepvit rtl: error: --spike-word-bits: spike_word_bits (2) must be a multiple of the "
        "channels of a head (4)"]
    build = tmp_path / "board"
    assert rtl(export, build, "--board", "pynq-z2", "--spike-word-bits", "16") == 0
    summary = json.loads(capsys.readouterr().out)
    assert 16 % summary["lanes"] == 0 and summary["sizing"]["estimate"]["fits"]
    assert json.loads((build / DESIGN_FILE).read_text())["spike_word_bits"] == 16


def test_a_held_ddr_design_is_reused_only_at_its_spike_word_bits(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = exports["a"], exports["b"]
    assert first.shape_hash == second.shape_hash
    build = tmp_path / "build"
    ddr = ("--weights", "ddr")
    assert rtl(first, build, *ddr, "--lanes", str(LANES), "--spike-word-bits",
               str(WORDS)) == 0
    verilog = (build / "stepvit_accel.v").read_text()
    held = f"{build} holds a {LANES}-lane ddr design of shape {first.shape_hash:08x}"
    capsys.readouterr()
    assert rtl(second, build, *ddr, "--spike-word-bits", "16") == 2
    assert error_lines(capsys) == [
        f"stepvit rtl: error: {held} whose spike maps hold words of at most {WORDS} bits; "
        f"--spike-word-bits 16 asks for words of at most 16 bits (drop --spike-word-bits or "
        f"use another --build)"]
    # Marked so that a regeneration would show: a reused build keeps its Verilog file.
    (build / "stepvit_accel.v").write_text(verilog + "// kept\n")
    for asked in (("--spike-word-bits", str(WORDS)), ()):  # its own value, or not asked
        assert rtl(second, build, *ddr, *asked) == 0
        assert json.loads(capsys.readouterr().out)["reused"] is True
        assert (build / "stepvit_accel.v").read_text() == verilog + "// kept\n"
        assert json.loads((build / DESIGN_FILE).read_text())["spike_word_bits"] == WORDS
    # a held design of one word a token refuses a value too
    plain = tmp_path / "plain"
    assert rtl(first, plain, *ddr, "--lanes", str(LANES)) == 0
    capsys.readouterr()
    assert rtl(second, plain, *ddr, "--spike-word-bits", str(WORDS)) == 2
    assert error_lines(capsys) == [
        f"stepvit rtl: error: {plain} holds a {LANES}-lane ddr design of shape "
        f"{first.shape_hash:08x} whose spike maps hold one word a token; --spike-word-bits "
        f"{WORDS} asks for words of at most {WORDS} bits (drop --spike-word-bits or use "
        f"another --build)"]


def test_a_ddr_design_of_older_generator_code_keeps_its_spike_word_bits(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import stepvit.rtl.build_folder as build_folder

    first, second = exports["a"], exports["b"]
    build = tmp_path / "build"
    assert rtl(first, build, "--weights", "ddr", "--lanes", str(LANES), "--spike-word-bits",
               str(WORDS)) == 0
    verilog = (build / "stepvit_accel.v").read_text()
    (build / "stepvit_accel.v").write_text(verilog + "// old\n")
    capsys.readouterr()
    monkeypatch.setattr(build_folder, "generator_fingerprint", lambda: "f" * 16)
    assert rtl(second, build, "--weights", "ddr") == 0
    assert "generating it again as recorded" in capsys.readouterr().err
    record = json.loads((build / DESIGN_FILE).read_text())
    assert record["generator"] == "f" * 16 and record["spike_word_bits"] == WORDS
    assert json.loads((build / "report.json").read_text())["spike_word_bits"] == WORDS
    assert (build / "stepvit_accel.v").read_text() == verilog  # generated again, the same


def test_overlay_generates_the_records_spike_word_bits(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A build folder's record with spike_word_bits: the overlay's Verilog, record and
    description are that design's (copied from the build, or generated for another
    export of its shape)."""
    first, second = exports["a"], exports["b"]
    for weights in ("rom", "ddr"):
        build = tmp_path / f"build-{weights}"
        assert rtl(first, build, "--weights", weights, "--lanes", str(LANES), "--board",
                   "pynq-z2", "--spike-word-bits", str(WORDS)) == 0
        for export in (first, second) if weights == "ddr" else (first,):
            out = tmp_path / f"overlay-{weights}-{export.config_hash:08x}"
            assert cli.main(["overlay", str(export.path), "--build", str(build), "--out",
                             str(out)]) == 0
            capsys.readouterr()
            assert json.loads((out / DESIGN_FILE).read_text())["spike_word_bits"] == WORDS
            assert json.loads((out / "overlay.json").read_text())["spike_word_bits"] == WORDS
            report = json.loads((out / "report.json").read_text())
            assert report["spike_word_bits"] == WORDS
            assert spike_memories(report)["spikes_hidden"][0] == WORDS


def test_a_build_whose_report_is_not_its_records_is_generated_again(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The overlay copies a build's Verilog only where its report's spike_word_bits is the
    record's."""
    export = exports["a"]
    build = tmp_path / "build"
    assert rtl(export, build, "--lanes", str(LANES)) == 0
    design = json.loads((build / DESIGN_FILE).read_text())
    (build / DESIGN_FILE).write_text(json.dumps({**design, "spike_word_bits": WORDS}))
    out = tmp_path / "overlay"
    assert cli.main(["overlay", str(export.path), "--build", str(build), "--board", "pynq-z2",
                     "--out", str(out)]) == 0
    assert "the Verilog of" not in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["spike_word_bits"] == WORDS
    assert spike_memories(report)["spikes_hidden"] == (WORDS, 2 * export.t_max
                                                       * export.arch["tokens"])


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_sim_runs_the_records_segmented_design_bit_for_bit(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture,
        simulator: str) -> None:
    """`stepvit sim --build B` of a design with spike_word_bits: generated from the record
    (the Verilator bulk path and the cocotb one), the golden model's packets word for
    word."""
    export = exports["a"]
    build = tmp_path / "build"
    assert rtl(export, build, "--lanes", "2", "--spike-word-bits", str(WORDS)) == 0
    capsys.readouterr()
    assert cli.main(["sim", str(export.path), "--images", "2", "--budget", "1,3", "--build",
                     str(build), "--simulator", simulator]) == 0
    assert json.loads(capsys.readouterr().out)["mismatches"] == 0
    report = json.loads((build / "rtl" / "report.json").read_text())
    assert report["spike_word_bits"] == WORDS
    assert spike_memories(report)["spikes_hidden"] == (WORDS, 2 * export.t_max
                                                       * export.arch["tokens"])


def test_the_record_says_spike_word_bits_only_where_given(
        exports: dict[str, Export], tmp_path: Path) -> None:
    export = exports["a"]
    plain = record_design(tmp_path / "plain", export, LANES)
    words = record_design(tmp_path / "words", export, LANES, spike_word_bits=WORDS)
    assert "spike_word_bits" not in plain
    assert words == {**plain, "spike_word_bits": WORDS}


def test_memory_shapes_are_the_segmented_maps(wide: Export) -> None:
    plan = CorePlan(wide, lanes=8, contents=False, spike_word_bits=16)
    g = plan.geometry
    steps_tokens = wide.t_max * wide.arch["tokens"]
    assert (g.dim_word_bits, g.mlp_word_bits, g.dim_segments, g.mlp_segments) == (64, 128, 4, 8)
    shapes = memory_shapes(plan)
    for i in range(4):
        assert shapes[f"spikes_buf{i}"] == (16, 4 * steps_tokens)
    assert shapes["spikes_hidden"] == (16, 8 * steps_tokens)
    plain = memory_shapes(CorePlan(wide, lanes=8, contents=False))
    assert plain["spikes_buf0"] == (64, steps_tokens)
    assert plain["spikes_hidden"] == (128, steps_tokens)
    # head.in's counts become a memory: a segment's 16 channels of count_bits a word
    assert shapes["head_counts"] == (16 * g.count_bits, 4) and "head_counts" not in plain
    # every other memory is the same
    assert ({k: v for k, v in shapes.items() if not k.startswith(("spikes", "head_counts"))}
            == {k: v for k, v in plain.items() if not k.startswith("spikes")})


def test_the_lut_estimate_follows_the_walkers_bits(wide: Export) -> None:
    geometry = CoreGeometry.from_export(wide, lanes=8)
    assert geometry.walk_bits == 128
    plain_lut = core_resources(wide, 8).lut
    # at least the widest spike word: walker_bits == walk_bits, the same design
    for words in (128, 256):
        assert core_resources(wide, 8, spike_word_bits=words) == core_resources(wide, 8)
    # narrower words: the walk's share is per_word_bit a bit of the walker's 16 and
    # per_segmented_bit a bit of the widest word's 128, not per_walk_bit a bit of 128 (the
    # maps may move too)
    lut = core_resources(wide, 8, spike_word_bits=16).lut
    assert lut < plain_lut
    def lutram(plan: CorePlan) -> int:
        granularity = sizing.memory_granularity(plan)
        return sum(sizing.memory_lutram_luts(width, depth, rom=name in sizing.ROMS,
                                             granularity=granularity.get(name))
                   for name, (width, depth) in memory_shapes(plan).items())

    plain = lutram(CorePlan(wide, lanes=8, contents=False))
    segmented = lutram(CorePlan(wide, lanes=8, contents=False, spike_word_bits=16))
    walk = round(LUT_MODEL["per_word_bit"] * 16 + LUT_MODEL["per_segmented_bit"] * 128)
    assert plain_lut - lut == LUT_MODEL["per_walk_bit"] * 128 - walk + plain - segmented


def test_choose_lanes_weighs_the_lane_counts_the_value_takes(wide: Export) -> None:
    board = board_parameters("kv260")
    _, every = choose_lanes(wide, board)
    best, some = choose_lanes(wide, board, spike_word_bits=16)
    assert [e.lanes for e in every] == list(range(1, 129))
    assert [e.lanes for e in some] == [1, 2, 4, 8, 16]
    assert best.lanes in (1, 2, 4, 8, 16)
    assert sizing.estimate(wide, 8, board, spike_word_bits=16) == next(
        e for e in some if e.lanes == 8)
    with pytest.raises(ValueError, match=r"multiple of the channels of a head \(16\)"):
        choose_lanes(wide, board, spike_word_bits=8)
