"""The clock estimate: cell delays read from Yosys's library, the longest path through them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepvit.rtl.timing import cell_timing, longest_path

LIBRARY = """
module LUT2(output O, input I0, I1);
  specify
    (I0 => O) = 238;
    (I1 => O) = 127;
  endspecify
endmodule
module CARRY2(output [1:0] CO, input CI, input [1:0] S);
  specify
    (CI => CO[0]) = 271; (S[0] => CO[0]) = 340;
    (CI => CO[1]) = 300;
  endspecify
endmodule
module FDRE(output reg Q, input C, CE, D, R);
  specify
    $setup(D , posedge C &&& CE && !IS_C_INVERTED , /*-46*/ 0); // negative times
    $setup(CE, posedge C &&& !IS_C_INVERTED, 109);
    if (!IS_C_INVERTED && R != IS_R_INVERTED) (posedge C => (Q : 1'b0)) = 303;
  endspecify
endmodule
module BUFG(output O, input I);
endmodule
"""


def _cell(kind: str, inputs: dict[str, list], outputs: dict[str, list]) -> dict:
    return {"type": kind, "connections": {**inputs, **outputs},
            "port_directions": {**{pin: "input" for pin in inputs},
                                **{pin: "output" for pin in outputs}}}


def _netlist(cells: dict[str, dict]) -> dict:
    return {"modules": {"top": {"attributes": {"top": "1"}, "cells": cells}}}


@pytest.fixture
def library(tmp_path: Path):
    path = tmp_path / "cells_sim.v"
    path.write_text(LIBRARY)
    return cell_timing(path)


def test_reads_arcs_clock_to_out_and_setup(library) -> None:
    assert library["LUT2"].arcs[("I0", None)] == {("O", None): 238}
    assert library["CARRY2"].arcs[("S", 0)] == {("CO", 0): 340}
    assert library["FDRE"].clock_to_out == {"Q": 303}
    assert library["FDRE"].setup == {"D": 0, "CE": 109}
    assert "BUFG" not in library


def test_the_slowest_arc_and_the_setup_make_the_path(library) -> None:
    # a -> LUT2.I0 (238) -> LUT2.I0 (238) -> b.CE (setup 109); the D input is faster.
    netlist = _netlist({
        "a": _cell("FDRE", {"C": [1], "D": [9], "CE": ["1"], "R": ["0"]}, {"Q": [2]}),
        "l1": _cell("LUT2", {"I0": [2], "I1": [2]}, {"O": [3]}),
        "l2": _cell("LUT2", {"I0": [3], "I1": [2]}, {"O": [4]}),
        "b": _cell("FDRE", {"C": [1], "D": [2], "CE": [4], "R": ["0"]}, {"Q": [9]}),
    })
    path = longest_path(netlist, library)
    assert path["path_ps"] == 303 + 238 + 238 + 109
    assert path["logic_levels"] == 2
    assert path["fmax_mhz"] == pytest.approx(1e6 / 888, abs=0.1)
    assert path["start"] == "a (FDRE)" and path["end"].startswith("b (FDRE.CE")
    assert [step["cell"] for step in path["path"]] == ["a", "l1", "l2"]


def test_paths_from_ports_and_unknown_cells_start_nothing(library) -> None:
    # Net 5 is a top input, net 6 the output of a cell without timing: neither launches.
    netlist = _netlist({
        "g": _cell("BUFG", {"I": [5]}, {"O": [6]}),
        "l": _cell("LUT2", {"I0": [5], "I1": [6]}, {"O": [7]}),
        "r": _cell("FDRE", {"C": [6], "D": [7], "CE": ["1"], "R": ["0"]}, {"Q": [8]}),
    })
    path = longest_path(netlist, library)
    assert path["path_ps"] == 0 and path["fmax_mhz"] is None
    assert path["unknown_cells"] == {"BUFG": 1}


def test_bit_arcs_follow_the_carry_chain(library) -> None:
    netlist = _netlist({
        "a": _cell("FDRE", {"C": [1], "D": [9], "CE": ["1"], "R": ["0"]}, {"Q": [2]}),
        "c": _cell("CARRY2", {"CI": ["0"], "S": [2, 2]}, {"CO": [3, 4]}),
        "b": _cell("FDRE", {"C": [1], "D": [3], "CE": ["1"], "R": ["0"]}, {"Q": [9]}),
    })
    assert longest_path(netlist, library)["path_ps"] == 303 + 340


def test_an_unconnected_output_ends_no_path(library) -> None:
    # Yosys leaves a cell's unused outputs out of its connections: this CARRY2 has none,
    # and its bit arcs into the missing CO must not stop the analysis.
    netlist = _netlist({
        "a": _cell("FDRE", {"C": [1], "D": [9], "CE": ["1"], "R": ["0"]}, {"Q": [2]}),
        "c": _cell("CARRY2", {"CI": [2], "S": [2, 2]}, {}),
        "l": _cell("LUT2", {"I0": [2], "I1": [2]}, {"O": [3]}),
        "b": _cell("FDRE", {"C": [1], "D": [3], "CE": ["1"], "R": ["0"]}, {"Q": [9]}),
    })
    assert longest_path(netlist, library)["path_ps"] == 303 + 238


@pytest.mark.skipif(not Path("/usr/share/yosys/xilinx/cells_sim.v").is_file(),
                    reason="needs Yosys's Xilinx library")
def test_reads_yosys_xilinx_library() -> None:
    cells = cell_timing("/usr/share/yosys/xilinx/cells_sim.v")
    assert cells["LUT6"].arcs[("I0", None)] == {("O", None): 642}
    assert cells["FDRE"].clock_to_out == {"Q": 303} and cells["FDRE"].setup["CE"] == 109
    assert cells["RAMB18E1"].clock_to_out["DOADO"] == 2454
