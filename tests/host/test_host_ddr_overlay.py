"""A ddr overlay: `stepvit overlay` of a `--weights ddr` build, and the Tcl's m_axi port.

As in ``test_host_overlay.py`` (whose stubbed-Vivado runner this reuses), Vivado is not
here: the Tcl runs under ``tclsh`` with Vivado's commands stubbed, which checks its port
check and the block design it asks for, not Vivado's answer. Checked: the Tcl's expected
``m_axi_*`` ports are the generated Verilog's; a ddr accelerator's read master goes to a
second HP port (Zynq-7000: ``S_AXI_HP1`` of processing_system7, enabled at
``ddr.data_width``; UltraScale+: ``S_AXI_HP1_FPD``, the PS's ``S_AXI_GP3``) on its clock;
a rom accelerator's block design has none of it; the overlay folder says ``weights: ddr``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_host_overlay import BOARDS, PS_PORTS, run_stubbed, tcl_ports, top_ports

from stepvit.host.backend_pynq import ACCEL_NAME
from stepvit.host.cli import main
from stepvit.model.export import load_export
from stepvit.rtl.boards import BOARDS_DIR, load_board
from stepvit.rtl.build_folder import export_image_path

#: The read master's ports as the Tcl lists them, in its order.
DDR_PORTS = ["m_axi_arvalid", "m_axi_arready", "m_axi_araddr", "m_axi_arlen", "m_axi_arsize",
             "m_axi_arburst", "m_axi_rdata", "m_axi_rvalid", "m_axi_rready", "m_axi_rresp",
             "m_axi_rlast"]
#: Per PS kind: the second HP port's name, its enable and width settings, its clock pin.
DDR_SETTINGS = {
    "processing_system7": ("S_AXI_HP1", "CONFIG.PCW_USE_S_AXI_HP1 1",
                           "CONFIG.PCW_S_AXI_HP1_DATA_WIDTH {width}", "S_AXI_HP1_ACLK"),
    "zynq_ultra_ps_e": ("S_AXI_HP1_FPD", "CONFIG.PSU__USE__S_AXI_GP3 1",
                        "CONFIG.PSU__SAXIGP3__DATA_WIDTH {width}", "saxihp1_fpd_aclk"),
}
LANES = 2


def tcl_ddr_ports() -> list[str]:
    text = (BOARDS_DIR / "common" / "stepvit_overlay.tcl").read_text()
    return re.search(r"set accel_ddr_ports \{(.*?)\}", text, re.S).group(1).split()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory, random_export) -> Path:
    return random_export(tmp_path_factory.mktemp("export") / "tiny", seed=2)


@pytest.fixture(scope="module")
def ddr_verilog(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The ddr accelerator's Verilog at 64-bit (pynq-z2) and 128-bit (kv260) beats."""
    made = {}
    for board, width in (("pynq-z2", 64), ("kv260", 128)):
        build = tmp_path_factory.mktemp(f"ddr-{board}")
        assert main(["rtl", str(export_dir), "--build", str(build), "--lanes", str(LANES),
                     "--weights", "ddr", "--board", board]) == 0
        made[width] = build / "stepvit_accel.v"
    return made


def tcl_ddr_write_ports() -> list[str]:
    text = (BOARDS_DIR / "common" / "stepvit_overlay.tcl").read_text()
    return re.search(r"set accel_ddr_write_ports \{(.*?)\}", text, re.S).group(1).split()


@pytest.fixture(scope="module")
def stream_ddr_verilog(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The accelerator whose residual stream is in DDR: m_axi reads and writes."""
    build = tmp_path_factory.mktemp("stream-ddr")
    assert main(["rtl", str(export_dir), "--build", str(build), "--lanes", str(LANES),
                 "--weights", "ddr", "--board", "pynq-z2", "--stream-weights",
                 "--stream-ddr"]) == 0
    return build / "stepvit_accel.v"


def test_the_tcl_expects_exactly_the_write_ports_a_stream_in_ddr_adds(
        tmp_path: Path, stream_ddr_verilog: Path) -> None:
    ports = top_ports(stream_ddr_verilog.read_text())
    assert sorted(ports) == sorted(tcl_ports() + tcl_ddr_ports() + tcl_ddr_write_ports())
    process, log, _ = run_stubbed(tmp_path, "pynq-z2", stream_ddr_verilog)
    assert process.returncode == 0, process.stdout + process.stderr
    assert re.search(r"/m_axi$", log, re.M)  # the one master, reads and writes, on the HP port
    broken = tmp_path / "broken" / "stepvit_accel.v"
    broken.parent.mkdir()
    broken.write_text(re.sub(r"(input|output)\s+(\[[^\]]*\]\s*)?m_axi_bresp\s*;", "",
                             stream_ddr_verilog.read_text()))
    process, _, _ = run_stubbed(tmp_path / "broken", "pynq-z2", broken)
    assert process.returncode == 1
    assert "has m_axi_awaddr but no port m_axi_bresp" in process.stdout


def test_the_tcl_expects_exactly_the_m_axi_ports_the_generator_emits(ddr_verilog):
    assert tcl_ddr_ports() == DDR_PORTS
    for verilog in ddr_verilog.values():
        ports = top_ports(verilog.read_text())
        assert sorted(ports) == sorted(tcl_ports() + tcl_ddr_ports())


@pytest.mark.parametrize("board", BOARDS)
def test_a_ddr_accelerator_reads_through_a_second_hp_port(tmp_path: Path, board: str,
                                                           ddr_verilog):
    described = load_board(board)
    width = described.memory().data_width
    process, log, _ = run_stubbed(tmp_path, board, ddr_verilog[width])
    assert process.returncode == 0, process.stdout + process.stderr
    ps, _, hp, clock, _ = PS_PORTS[described.ps["ip"]]
    port, enable, data_width, port_clock = DDR_SETTINGS[described.ps["ip"]]
    assert port != hp
    assert enable in log and data_width.format(width=width) in log
    assert f"connect_bd_net /{ps}/{clock} /{ps}/{port_clock}\n" in log
    rule = "apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config"
    assert (f"{rule} {{Slave /{ps}/{port} Clk_master Auto Clk_slave Auto Clk_xbar Auto}} "
            f"/{ACCEL_NAME}/m_axi") in log.splitlines()
    lines = log.splitlines()
    automation = next(i for i, line in enumerate(lines) if line.endswith(f"{ACCEL_NAME}/m_axi"))
    assert automation < lines.index("assign_bd_address ")


@pytest.mark.parametrize("board", ["pynq-z2", "kv260"])
def test_a_rom_accelerator_gets_no_second_hp_port(tmp_path: Path, board: str, export_dir: Path):
    build = tmp_path / "rom"
    assert main(["rtl", str(export_dir), "--build", str(build), "--lanes", str(LANES)]) == 0
    process, log, _ = run_stubbed(tmp_path, board, build / "stepvit_accel.v")
    assert process.returncode == 0, process.stdout + process.stderr
    port, enable, _, _ = DDR_SETTINGS[load_board(board).ps["ip"]]
    assert port not in log and enable not in log
    assert not re.search(r"/m_axi$", log, re.M)


def test_a_ddr_verilog_missing_one_read_port_is_refused(tmp_path: Path, ddr_verilog):
    text = ddr_verilog[64].read_text()
    broken = tmp_path / "stepvit_accel.v"
    broken.write_text(re.sub(r"(input|output)\s+(\[[^\]]*\]\s*)?m_axi_rlast\s*;", "", text))
    process, _, _ = run_stubbed(tmp_path, "pynq-z2", broken)
    assert process.returncode == 1
    assert "has m_axi_araddr but no port m_axi_rlast" in process.stdout


def test_overlay_of_a_ddr_build_says_so(export_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture):
    export = load_export(export_dir)
    build = tmp_path / "build"
    assert main(["rtl", str(export_dir), "--build", str(build), "--lanes", str(LANES),
                 "--weights", "ddr", "--board", "pynq-z2"]) == 0
    out = tmp_path / "overlay"
    capsys.readouterr()
    assert main(["overlay", str(export_dir), "--build", str(build), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "copy stepvit.bit, stepvit.hwh and overlay.json" in printed
    info = json.loads((out / "overlay.json").read_text())
    assert (info["weights"], info["shape_hash"], info["data_width"]) == (
        "ddr", f"{export.shape_hash:08x}", 64)
    assert info["weight_image"] == export_image_path(export_dir, LANES, 64).name
    assert info["weight_image"] == f"weights-lanes{LANES}-axi64.img"  # no stem: no -stem<S>
    assert "stem_lanes" not in info
    # the size the driver checks the image against
    assert info["weight_image_bytes"] == len((export_dir / info["weight_image"]).read_bytes())
    assert info["weight_image_bytes"] == info["rtl_report"]["weight_image"]["bytes"]
    assert (out / "stepvit_accel.v").read_text() == (build / "stepvit_accel.v").read_text()
    assert "m_axi_araddr" in (out / "stepvit_accel.v").read_text()
    assert main(["overlay", str(export_dir), "--build", str(build), "--board", "kv260",
                 "--out", str(tmp_path / "kv")]) == 2
    assert "holds a ddr design with a 64-bit AXI master (bursts of 16); kv260 has 128" in (
        capsys.readouterr().err)


def test_overlay_of_a_ddr_build_with_a_margin_records_the_designs_widths(
        export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from stepvit.model.export import design_widths
    from stepvit.rtl.build_folder import image_widths

    export = load_export(export_dir)
    build, out = tmp_path / "build", tmp_path / "overlay"
    assert main(["rtl", str(export_dir), "--build", str(build), "--lanes", str(LANES),
                 "--weights", "ddr", "--board", "pynq-z2", "--width-margin", "1"]) == 0
    assert main(["overlay", str(export_dir), "--build", str(build), "--out", str(out)]) == 0
    widths = design_widths(export.bit_widths, 1)
    info = json.loads((out / "overlay.json").read_text())
    assert info["bit_widths"] == widths
    assert info["weight_image"] == export_image_path(
        export_dir, LANES, 64, image_widths(export.bit_widths, widths)).name
    assert (export_dir / info["weight_image"]).is_file()
    assert (out / "stepvit_accel.v").read_text() == (build / "stepvit_accel.v").read_text()
