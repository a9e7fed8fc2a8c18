"""The generated top: its Verilog port list, its report, and its refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stepvit.host import cli
from stepvit.model.export import Export, load_export
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.generate import generate, memories_of
from stepvit.rtl.top import StepvitAccel

# The refusal tests build components that are never elaborated, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

#: Every port of stepvit_accel: direction and width (Vivado naming; docs/architecture.md).
EXPECTED_PORTS = {
    "aclk": ("input", 1), "aresetn": ("input", 1),
    "s_axis_tdata": ("input", 32), "s_axis_tvalid": ("input", 1),
    "s_axis_tready": ("output", 1), "s_axis_tlast": ("input", 1),
    "m_axis_tdata": ("output", 32), "m_axis_tvalid": ("output", 1),
    "m_axis_tready": ("input", 1), "m_axis_tlast": ("output", 1),
    "s_axil_awaddr": ("input", 12), "s_axil_awvalid": ("input", 1),
    "s_axil_awready": ("output", 1), "s_axil_wdata": ("input", 32),
    "s_axil_wstrb": ("input", 4), "s_axil_wvalid": ("input", 1),
    "s_axil_wready": ("output", 1), "s_axil_bresp": ("output", 2),
    "s_axil_bvalid": ("output", 1), "s_axil_bready": ("input", 1),
    "s_axil_araddr": ("input", 12), "s_axil_arvalid": ("input", 1),
    "s_axil_arready": ("output", 1), "s_axil_rdata": ("output", 32),
    "s_axil_rresp": ("output", 2), "s_axil_rvalid": ("output", 1),
    "s_axil_rready": ("input", 1),
}


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    return load_export(random_export(tmp_path_factory.mktemp("export"), seed=2))


@pytest.fixture(scope="module")
def build(tiny_export: Export, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    assert cli.main(["rtl", str(tiny_export.path), "--out", str(out), "--lanes", "4"]) == 0
    return out


def command_lines(stderr: str) -> list[str]:
    """Return the command's own lines of ``stderr``.

    Amaranth may also report there, when they are collected, components that the refusal
    tests built on purpose and never elaborated.
    """
    return [line for line in stderr.splitlines() if line.startswith("stepvit")]


def verilog_ports(verilog: str, module: str) -> dict[str, tuple[str, int]]:
    body = verilog[verilog.index(f"module {module}("):]
    body = body[: body.index("endmodule")]
    ports = {}
    for direction, msb, lsb, name in re.findall(
            r"^\s*(input|output)\s+(?:\[(\d+):(\d+)\]\s+)?(\w+)\s*;", body, re.MULTILINE):
        ports[name] = (direction, int(msb) - int(lsb) + 1 if msb else 1)
    return ports


def test_port_names_directions_and_widths(build: Path) -> None:
    verilog = (build / "stepvit_accel.v").read_text()
    assert verilog_ports(verilog, "stepvit_accel") == EXPECTED_PORTS


def test_ports_carry_vivado_interface_attributes(build: Path) -> None:
    verilog = (build / "stepvit_accel.v").read_text()
    assert '(* X_INTERFACE_INFO = "xilinx.com:interface:axis:1.0 s_axis TDATA" *)' in verilog
    assert '(* X_INTERFACE_INFO = "xilinx.com:interface:aximm:1.0 s_axil RREADY" *)' in verilog
    assert "ASSOCIATED_BUSIF s_axis:m_axis:s_axil, ASSOCIATED_RESET aresetn" in verilog


def test_report(build: Path, tiny_export: Export) -> None:
    report = json.loads((build / "report.json").read_text())
    assert report["config_hash"] == f"{tiny_export.config_hash:08x}"
    assert report["rtlil"] == "stepvit_accel.il"
    assert (build / "stepvit_accel.il").read_text().count("module \\stepvit_accel\n") == 1
    assert report["lanes"] == 4
    assert report["image_words"] == 4
    assert report["packet_words"] == 3 + 2 + 7 + 2
    assert [port["name"] for port in report["ports"]] == list(EXPECTED_PORTS)
    buffer = [memory for memory in report["memories"] if memory["depth"] == 4
              and memory["width"] == 32]
    assert buffer, "the image buffer (4 words of 32 bits) is not among the memories"
    assert report["memory_bits"] == sum(memory["bits"] for memory in report["memories"])


def test_memories_are_parsed_from_the_verilog() -> None:
    text = "  reg [17:0] weights [63:0];\n  reg flags [0:7];\n  reg [3:0] not_a_memory;\n"
    assert memories_of(text) == [
        {"name": "weights", "width": 18, "depth": 64, "bits": 1152},
        {"name": "flags", "width": 1, "depth": 8, "bits": 8},
    ]


def test_refuses_bad_lanes_and_a_core_of_another_export(tiny_export: Export, tmp_path: Path,
                                                        random_export) -> None:
    with pytest.raises(ValueError, match="lanes must be at least 1, not 0"):
        StepvitAccel(tiny_export, lanes=0)
    other = load_export(random_export(tmp_path, depth=2, seed=2))
    with pytest.raises(ValueError, match="core does not have the core_signature"):
        StepvitAccel(tiny_export, lanes=4, core=StepvitCore(other, lanes=4))


def test_rtl_command_refuses_a_bad_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["rtl", str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 2
    lines = command_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("stepvit rtl: error: ")
    assert not (tmp_path / "b" / "stepvit_accel.v").exists()


def test_rtl_command_refuses_lanes_the_core_cannot_use(tiny_export: Export, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["rtl", str(tiny_export.path), "--out", str(tmp_path), "--lanes", "17"]) == 2
    lines = command_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0] == ("stepvit rtl: error: cannot build the accelerator: lanes (17) must be "
                        "at most the widest output row (16)")


def test_generate_writes_into_a_new_folder(tiny_export: Export, tmp_path: Path) -> None:
    report = generate(tiny_export, tmp_path / "a" / "b", lanes=2)
    assert (tmp_path / "a" / "b" / "stepvit_accel.v").is_file()
    assert report["lanes"] == 2


#: The AXI4 read master a ``--weights ddr`` design adds: the read channels only.
DDR_PORTS = {
    "m_axi_arvalid": ("output", 1), "m_axi_arready": ("input", 1),
    "m_axi_araddr": ("output", 32), "m_axi_arlen": ("output", 8),
    "m_axi_arsize": ("output", 3), "m_axi_arburst": ("output", 2),
    "m_axi_rvalid": ("input", 1), "m_axi_rready": ("output", 1),
    "m_axi_rresp": ("input", 2), "m_axi_rlast": ("input", 1),
}


@pytest.mark.parametrize(("board", "data_width"), [(None, 64), ("kv260", 128)])
def test_rtl_weights_ddr_adds_the_read_master_and_writes_the_image(
        tiny_export: Export, tmp_path: Path, board: str | None, data_width: int) -> None:
    from stepvit.rtl.design_image import design_image

    command = ["rtl", str(tiny_export.path), "--build", str(tmp_path), "--lanes", "4",
               "--weights", "ddr"]
    assert cli.main(command + (["--board", board] if board else [])) == 0
    ports = verilog_ports((tmp_path / "stepvit_accel.v").read_text(), "stepvit_accel")
    assert ports == {**EXPECTED_PORTS, **DDR_PORTS, "m_axi_rdata": ("input", data_width)}
    report = json.loads((tmp_path / "report.json").read_text())
    image = design_image(tiny_export, lanes=4, data_width=data_width)
    assert (tmp_path / "weights.img").read_bytes() == image.image
    assert report["weight_image"]["checksum"] == f"{image.checksum:016x}"
    assert report["shape_hash"] == f"{tiny_export.shape_hash:08x}"
    assert [m["name"] for m in report["weight_image"]["memories"]] == [
        "weights", "biases", "thresholds", "stream_spike", "head_bias"]


def test_rtl_command_refuses_an_unknown_weights_mode(tiny_export: Export, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["rtl", str(tiny_export.path), "--build", str(tmp_path), "--lanes", "4",
                     "--weights", "foo"]) == 2
    lines = command_lines(capsys.readouterr().err)
    assert lines == ["stepvit rtl: error: --weights: expected one of rom, ddr, got 'foo'"]
    assert not (tmp_path / "stepvit_accel.v").exists()
