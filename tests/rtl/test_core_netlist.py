"""The core's netlist has no multiplier: Yosys finds no multiply cell of any kind."""

import json
import shutil
import subprocess

import pytest
from amaranth.back import verilog

from stepvit.host.export import load_export
from stepvit.model.random_export import make_random_export
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.synth import MULTIPLIER_CELLS

pytestmark = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")


def multiply_cells(verilog_text, top, work_dir):
    """Return ``cell type -> count`` of the multiply cells Yosys infers from ``verilog_text``."""
    source, stat = work_dir / f"{top}.v", work_dir / f"{top}_stat.json"
    source.write_text(verilog_text)
    subprocess.run(
        ["yosys", "-q", "-p", f"read_verilog {source}; hierarchy -top {top}; proc; flatten; "
         f"opt_expr; opt_clean; tee -q -o {stat} stat -json"],
        check=True, capture_output=True, text=True, timeout=300)
    design = json.loads(stat.read_text())["design"]
    return {cell: count for cell, count in design["num_cells_by_type"].items()
            if cell in MULTIPLIER_CELLS}


def test_the_check_sees_a_multiplier(tmp_path):
    text = "module times(input [7:0] a, input [7:0] b, output [15:0] y); " \
           "assign y = a * 8'd3 + a * b; endmodule\n"
    assert multiply_cells(text, "times", tmp_path) == {"$mul": 2}


@pytest.mark.parametrize("lanes", [1, 4])
def test_core_has_no_multiplier(tmp_path, lanes):
    export = load_export(make_random_export(
        tmp_path / "export", image_shape=[3, 4, 4], patch=2, dim=12, heads=3, depth=1,
        mlp_dim=24, num_classes=5, t_max=3, seed=4))
    text = verilog.convert(StepvitCore(export, lanes=lanes), name="stepvit_core")
    assert multiply_cells(text, "stepvit_core", tmp_path) == {}
