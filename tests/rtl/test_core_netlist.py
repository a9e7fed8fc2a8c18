"""The core's netlist: Yosys finds no multiply cell of any kind, and the memories we report."""

import json
import shutil
import subprocess

import pytest
from amaranth.back import verilog

from stepvit.model.export import load_export
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.synth import MULTIPLIER_CELLS

pytestmark = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")


def yosys_stat(verilog_text, top, work_dir):
    """Return Yosys's ``stat`` of ``verilog_text`` before technology mapping."""
    source, stat = work_dir / f"{top}.v", work_dir / f"{top}_stat.json"
    source.write_text(verilog_text)
    subprocess.run(
        ["yosys", "-q", "-p", f"read_verilog {source}; hierarchy -top {top}; proc; flatten; "
         f"opt_expr; opt_clean; tee -q -o {stat} stat -json"],
        check=True, capture_output=True, text=True, timeout=300)
    return json.loads(stat.read_text())["design"]


def multiply_cells(design):
    """Return ``cell type -> count`` of the multiply cells in a Yosys ``stat``."""
    return {cell: count for cell, count in design["num_cells_by_type"].items()
            if cell in MULTIPLIER_CELLS}


def test_the_check_sees_a_multiplier(tmp_path):
    text = "module times(input [7:0] a, input [7:0] b, output [15:0] y); " \
           "assign y = a * 8'd3 + a * b; endmodule\n"
    assert multiply_cells(yosys_stat(text, "times", tmp_path)) == {"$mul": 2}


@pytest.mark.parametrize(("lanes", "words"), [(1, None), (4, None), (4, 8)])
def test_core_has_no_multiplier(tmp_path, lanes, words, random_export):
    # words: spike maps of 8-bit segments (dim 16 in two, the hidden 96 in twelve)
    export = load_export(random_export(tmp_path / "export", image_shape=[3, 4, 4],
                                       dim=12 if words is None else 16, heads=3 if words is
                                       None else 2, mlp_dim=24 if words is None else 96,
                                       num_classes=5, seed=4))
    core = StepvitCore(export, lanes=lanes, spike_word_bits=words)
    design = yosys_stat(verilog.convert(core, name="stepvit_core"), "stepvit_core", tmp_path)
    assert multiply_cells(design) == {}
    # CorePlan.memory_bits, which sizes a design before synthesis, is what Yosys finds.
    assert design["num_memory_bits"] == sum(core.plan.memory_bits().values())


@pytest.mark.parametrize("reader", ["runs", "burst"])
def test_the_tile_fetches_count_beats_without_a_multiplier(tmp_path, reader):
    """A tile's beats are its words times the beats of a word, and a stem tile's times its
    k² runs: shifts and adds (a ``$mul`` by 9 became a DSP block in Spikformer-4-384's
    synthesis). Three beats a word (a 192-bit word of 24 lanes) and nine runs, neither a
    power of two."""
    from stepvit.rtl.axi_reader import AxiBurstReader
    from stepvit.rtl.axi_runs import AxiRunsReader

    shape = dict(data_width=64, word_width=192, depth=300)
    top = AxiRunsReader(runs=9, **shape) if reader == "runs" else AxiBurstReader(**shape)
    design = yosys_stat(verilog.convert(top, name="reader"), "reader", tmp_path)
    assert multiply_cells(design) == {}


def operand_reaches_an_output(stage, port, work_dir):
    """Return whether input ``port`` of a sum stage drives any output (Yosys, optimized)."""
    source = work_dir / "sums.v"
    source.write_text(verilog.convert(stage, name="sums"))
    result = subprocess.run(
        ["yosys", "-q", "-p", f"read_verilog {source}; hierarchy -top sums; proc; flatten; "
         f"opt; select -assert-none i:{port} %co* o:* %i"],
        capture_output=True, text=True, timeout=300)
    return result.returncode != 0


def test_a_stem_designs_sum_stage_never_adds_the_embedding_current(tmp_path, random_export):
    # the sum stage's operand multiplexer holds only the operands the plan's passes take:
    # with a stem there is no embedding, so the current input drives nothing
    from stepvit.rtl.core_plan import CorePlan
    from stepvit.rtl.sum_stage import SumStage

    stem = load_export(random_export(tmp_path / "stem", image_shape=[1, 9, 9], dim=8,
                                     stem={"stages": [{"channels": 8, "pool": "after"}]}))
    plain = load_export(random_export(tmp_path / "plain"))
    for export, reads_current in ((stem, False), (plain, True)):
        stage = SumStage(plan=CorePlan(export, lanes=4))
        assert operand_reaches_an_output(stage, "current", tmp_path) == reads_current
        assert operand_reaches_an_output(stage, "stream", tmp_path)
