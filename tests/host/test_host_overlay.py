"""The boards: board.yaml, the overlay Tcl against the generated Verilog, and `stepvit overlay`.

Vivado is not here, so the Tcl runs under plain ``tclsh`` with every Vivado command
replaced by a stub that logs its arguments: that checks the script's syntax, its port
check and the block design it asks for, not Vivado's answer to it. The stub answers as
Vivado does where the script depends on it: a cell object prints as ``/name``, the
UltraScale+ ``pl_clk0`` runs at 99.999 MHz, and ``impl_1`` reports the slack a test sets.
``tclsh`` (Debian's ``tcl``) is installed by ``make tools``: without it these tests fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stepvit.host.backend_pynq import ACCEL_NAME, DMA_NAME
from stepvit.host.cli import main
from stepvit.model.export import load_export
from stepvit.model.export.errors import StepvitError
from stepvit.rtl.boards import BOARDS_DIR, Board, board_names, board_tcl, lay_out_tcl, load_board
from stepvit.rtl.build_folder import record_design

BOARDS = ["kv260", "pynq-z2", "zcu104"]

VIVADO_STUB = r"""
set log [open {%(log)s} w]
proc record {command arguments} { puts $::log "$command $arguments"; flush $::log }
foreach command {create_project add_files update_compile_order create_bd_design
                 apply_bd_automation set_property connect_bd_intf_net connect_bd_net
                 assign_bd_address validate_bd_design save_bd_design wait_on_run} {
    proc $command args "record $command \$args; return {}"
}
proc get_board_parts args { return {} }
proc get_ipdefs args {
    set name [lindex [lindex $args end] end]
    return "xilinx.com:ip:$name:1.0"
}
proc create_bd_cell args { record create_bd_cell $args; return "/[lindex $args end]" }
proc get_bd_pins args { return [lindex $args end] }
proc get_bd_intf_pins args { return [lindex $args end] }
proc get_bd_nets args { return {} }
proc get_files args { return [lindex $args end] }
proc make_wrapper args { return stepvit_wrapper.v }
proc current_project args { return stepvit_overlay }
proc current_fileset args { return sources_1 }
proc get_runs args { return impl_1 }
proc get_property {name object} {
    switch -- $name {
        PROGRESS { return 100%% }
        STATS.WNS { return {%(wns)s} }
        STATS.WHS { return {%(whs)s} }
        CONFIG.FREQ_HZ { return [expr {[string match */pl_clk0 $object] ? 99999001 : 100000000}] }
    }
    error "the stub has no property $name"
}
proc launch_runs args {
    record launch_runs $args
    set runs [file join $::project_dir stepvit_overlay.runs impl_1]
    set handoff [file join $::project_dir stepvit_overlay.gen sources_1 bd stepvit hw_handoff]
    file mkdir $runs $handoff
    close [open [file join $runs stepvit_wrapper.bit] w]
    close [open [file join $handoff stepvit.hwh] w]
}
set argv [list {%(verilog)s} {%(out)s}]
set argc 2
source {%(script)s}
"""


def top_ports(verilog: str) -> list[str]:
    """Return the port names of module ``stepvit_accel`` in generated Verilog."""
    body = re.search(r"module\s+stepvit_accel\s*\((.*?)endmodule", verilog, re.S).group(1)
    return re.findall(r"^\s*(?:input|output)\s+(?:\[[^\]]*\]\s*)?(\w+)\s*;", body, re.M)


def tcl_ports() -> list[str]:
    text = (BOARDS_DIR / "common" / "stepvit_overlay.tcl").read_text()
    return re.search(r"set accel_ports \{(.*?)\}", text, re.S).group(1).split()


def tcl_setting(board: str, name: str) -> str:
    text = board_tcl(load_board(board))
    return re.search(rf"^set {name} (\S+)$", text, re.M).group(1)


def run_stubbed(tmp_path: Path, board: str | Board, verilog: Path, *, wns: str = "0.512",
                whs: str = "0.031") -> tuple[subprocess.CompletedProcess, str, Path]:
    """Run the Tcl laid out for a board under tclsh with Vivado stubbed; ``impl_1`` reports
    ``wns``/``whs``."""
    tclsh = shutil.which("tclsh")
    if tclsh is None:
        pytest.fail("tclsh is not installed: `make tools` installs it (Debian package tcl)")
    out, log, scripts = tmp_path / "overlay", tmp_path / "vivado.log", tmp_path / "tcl"
    scripts.mkdir(exist_ok=True)
    lay_out_tcl(board if isinstance(board, Board) else load_board(board), scripts)
    stub = tmp_path / "stub.tcl"
    stub.write_text(VIVADO_STUB % {"log": log, "verilog": verilog, "out": out, "wns": wns,
                                   "whs": whs, "script": scripts / "build_overlay.tcl"})
    process = subprocess.run([tclsh, str(stub)], capture_output=True, text=True, timeout=60)
    return process, log.read_text() if log.exists() else "", out


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory, random_export) -> Path:
    return random_export(tmp_path_factory.mktemp("export") / "tiny", seed=2)


@pytest.fixture(scope="module")
def overlay_dir(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("overlay") / "pynq-z2"
    assert main(["overlay", str(export_dir), "--board", "pynq-z2", "--out", str(out),
                 "--lanes", "2"]) == 0
    return out



def test_every_board_loads_with_the_design_resources():
    assert board_names() == BOARDS
    pynq_z2 = load_board("pynq-z2")
    assert (pynq_z2.part, pynq_z2.family, pynq_z2.clock_mhz) == ("xc7z020clg400-1", "xc7", 100)
    assert pynq_z2.resources == {"lut": 53200, "ff": 106400, "bram36": 140, "dsp": 220}
    assert load_board("kv260").family == load_board("zcu104").family == "xcup"


def test_unknown_board_and_bad_board_yaml_are_refused(tmp_path: Path):
    with pytest.raises(StepvitError, match="unknown board 'pynq-z3' \\(known: kv260, pynq-z2"):
        load_board("pynq-z3")
    fields = yaml.safe_load((BOARDS_DIR / "pynq-z2" / "board.yaml").read_text())
    fields["family"] = "xc9"
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(fields))
    with pytest.raises(StepvitError, match="family: expected one of"):
        load_board(tmp_path)
    del fields["part"]
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(fields))
    with pytest.raises(StepvitError, match="missing field 'part'"):
        load_board(tmp_path)


@pytest.mark.parametrize("board", BOARDS)
def test_board_tcl_settings_are_those_of_board_yaml(board: str):
    described = load_board(board)
    assert tcl_setting(board, "part") == described.part
    assert tcl_setting(board, "board_part") == described.ps["board_part"]
    assert float(tcl_setting(board, "clock_mhz")) == described.clock_mhz
    assert int(tcl_setting(board, "dma_width")) == described.dma_width
    assert tcl_setting(board, "ps_ip") == described.ps["ip"]
    assert tcl_setting(board, "gp_port") == described.ps["gp_port"]
    assert tcl_setting(board, "hp_port") == described.ps["hp_port"]


def changed_board(tmp_path: Path, **changes: object) -> Board:
    """Return a copy of the pynq-z2 with ``changes`` to its board.yaml (``ps`` merged)."""
    fields = yaml.safe_load((BOARDS_DIR / "pynq-z2" / "board.yaml").read_text())
    fields.update({key: value for key, value in changes.items() if key != "ps"})
    fields["ps"].update(changes.get("ps", {}))
    folder = tmp_path / "my-board"
    folder.mkdir()
    (folder / "board.yaml").write_text(yaml.safe_dump(fields))
    return load_board(folder)


def test_the_tcl_takes_every_board_value_from_board_yaml(tmp_path: Path, overlay_dir: Path):
    board = changed_board(tmp_path, part="xc7z010clg400-1", clock_mhz=125, dma_width=32,
                          ps={"board_part": "example.com:other:part0:2.0",
                              "gp_port": "M_AXI_GP1", "hp_port": "S_AXI_HP2"})
    process, log, _ = run_stubbed(tmp_path, board, overlay_dir / "stepvit_accel.v")
    assert process.returncode == 0, process.stdout + process.stderr
    assert re.search(r"^create_project stepvit_overlay \S+ -part xc7z010clg400-1 -force$", log,
                     re.M)
    assert "board files for example.com:other:part0:2.0 are not installed" in process.stdout
    assert "CONFIG.PCW_S_AXI_HP0_DATA_WIDTH 32" in log
    assert "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ 125" in log
    assert "CONFIG.c_m_axi_mm2s_data_width 32" in log
    assert "Master /processing_system7_0/M_AXI_GP1" in log
    assert "Slave /processing_system7_0/S_AXI_HP2" in log
    assert "at 125 MHz" in process.stdout


def test_the_tcl_refuses_a_folder_without_board_tcl(tmp_path: Path, overlay_dir: Path):
    run_stubbed(tmp_path, "pynq-z2", overlay_dir / "stepvit_accel.v")
    (tmp_path / "tcl" / "board.tcl").unlink()
    process = subprocess.run([shutil.which("tclsh"), str(tmp_path / "stub.tcl")],
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 1
    assert "board.tcl not found: lay the folder out with `stepvit overlay" in process.stdout


@pytest.mark.parametrize(("field", "value", "message"), [
    ("part", "xc7z020 clg400", "part: 'xc7z020 clg400' is not a part or port name"),
    ("ps", {"ip": "microblaze"}, "ps.ip: expected one of"),
    ("ps", {"hp_port": "S_AXI_HP0[1]"}, "ps.hp_port: 'S_AXI_HP0[1]' is not a part or port"),
    ("dma_width", "64", "dma_width: expected a positive integer"),
])
def test_a_board_value_the_tcl_cannot_take_is_refused(tmp_path: Path, field: str,
                                                       value: object, message: str):
    with pytest.raises(StepvitError, match=re.escape(message)):
        changed_board(tmp_path, **{field: value})


def test_overlay_command_lays_out_the_vivado_folder(overlay_dir: Path, export_dir: Path):
    for name in ("stepvit_accel.v", "build_overlay.tcl", "board.tcl", "stepvit_overlay.tcl",
                 "board.yaml", "design.json", "overlay.json"):
        assert (overlay_dir / name).is_file(), name
    info = yaml.safe_load((overlay_dir / "overlay.json").read_text())
    assert info["part"] == "xc7z020clg400-1" and info["lanes"] == 2
    design = yaml.safe_load((overlay_dir / "design.json").read_text())
    assert (design["lanes"], design["board"]) == (2, "pynq-z2")
    assert (overlay_dir / "board.tcl").read_text() == board_tcl(load_board("pynq-z2"))


def test_tcl_expects_exactly_the_ports_the_generator_emits(overlay_dir: Path):
    ports = top_ports((overlay_dir / "stepvit_accel.v").read_text())
    assert len(ports) == 2 + 8 + 17
    assert sorted(ports) == sorted(tcl_ports())


#: The PS cell and the ports the automation wires, per PS kind, as Vivado names them.
PS_PORTS = {
    "processing_system7": ("processing_system7_0", "M_AXI_GP0", "S_AXI_HP0", "FCLK_CLK0",
                           100000000),
    "zynq_ultra_ps_e": ("zynq_ultra_ps_e_0", "M_AXI_HPM0_FPD", "S_AXI_HP0_FPD", "pl_clk0",
                        99999001),
}

AUTOMATION_CLOCKS = "Clk_master Auto Clk_slave Auto Clk_xbar Auto"


@pytest.mark.parametrize("board", BOARDS)
def test_tcl_builds_the_block_design_around_the_generated_verilog(tmp_path: Path, board: str,
                                                                 overlay_dir: Path):
    process, log, out = run_stubbed(tmp_path, board, overlay_dir / "stepvit_accel.v")
    assert process.returncode == 0, process.stdout + process.stderr
    part = load_board(board).part
    assert re.search(rf"^create_project stepvit_overlay \S+ -part {part} -force$", log, re.M)
    assert f"-type module -reference stepvit_accel {ACCEL_NAME}" in log
    assert re.search(rf"create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma:1.0 {DMA_NAME}", log)
    ps_ip = load_board(board).ps["ip"]
    assert f"xilinx.com:ip:{ps_ip}:1.0" in log
    assert f"connect_bd_intf_net /{DMA_NAME}/M_AXIS_MM2S /{ACCEL_NAME}/s_axis\n" in log
    assert f"connect_bd_intf_net /{ACCEL_NAME}/m_axis /{DMA_NAME}/S_AXIS_S2MM\n" in log
    assert "CONFIG.c_include_sg 0" in log
    assert f"/proc_sys_reset_0/peripheral_aresetn /{ACCEL_NAME}/aresetn\n" in log
    assert (out / "stepvit.bit").is_file() and (out / "stepvit.hwh").is_file()
    assert "WNS 0.512 ns, WHS 0.031 ns at 100 MHz" in process.stdout


@pytest.mark.parametrize("board", BOARDS)
def test_tcl_automation_names_the_ps_ports_with_one_slash(tmp_path: Path, board: str,
                                                          overlay_dir: Path):
    """Vivado prints a cell as /name: the Master and Slave paths must not become //name."""
    process, log, _ = run_stubbed(tmp_path, board, overlay_dir / "stepvit_accel.v")
    assert process.returncode == 0, process.stdout + process.stderr
    ps, gp, hp, _, _ = PS_PORTS[load_board(board).ps["ip"]]
    automation = [line for line in log.splitlines()
                  if line.startswith("apply_bd_automation -rule xilinx.com:bd_rule:axi4")]
    rule = "apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config"
    assert automation == [
        f"{rule} {{Master /{ps}/{gp} {AUTOMATION_CLOCKS}}} /{DMA_NAME}/S_AXI_LITE",
        f"{rule} {{Master /{ps}/{gp} {AUTOMATION_CLOCKS}}} /{ACCEL_NAME}/s_axil",
        f"{rule} {{Slave /{ps}/{hp} {AUTOMATION_CLOCKS}}} /{DMA_NAME}/M_AXI_MM2S",
        f"{rule} {{Slave /{ps}/{hp} {AUTOMATION_CLOCKS}}} /{DMA_NAME}/M_AXI_S2MM",
    ]
    assert "//" not in log


@pytest.mark.parametrize("board", BOARDS)
def test_tcl_gives_the_accelerator_clock_the_ps_clock_frequency(tmp_path: Path, board: str,
                                                                overlay_dir: Path):
    """On UltraScale+ pl_clk0 is 99.999 MHz: the module reference's aclk must say so too."""
    process, log, _ = run_stubbed(tmp_path, board, overlay_dir / "stepvit_accel.v")
    assert process.returncode == 0, process.stdout + process.stderr
    ps, _, _, clock, frequency = PS_PORTS[load_board(board).ps["ip"]]
    lines = log.splitlines()
    setting = f"set_property CONFIG.FREQ_HZ {frequency} /{ACCEL_NAME}/aclk"
    assert setting in lines
    assert lines.index(f"connect_bd_net /{ps}/{clock} /{ACCEL_NAME}/aclk") < lines.index(setting)
    assert lines.index(setting) < lines.index("validate_bd_design ")


@pytest.mark.parametrize(
    ("wns", "whs", "message"),
    [
        ("-0.734", "0.031", "timing not met at 100 MHz: setup slack (WNS) -0.734 ns, hold "
                            "slack (WHS) 0.031 ns; no stepvit.bit written"),
        ("0.210", "-0.012", "timing not met at 100 MHz: setup slack (WNS) 0.210 ns, hold "
                            "slack (WHS) -0.012 ns; no stepvit.bit written"),
        ("", "0.031", "impl_1 reports no timing (STATS.WNS '', STATS.WHS '0.031')"),
    ],
)
def test_tcl_refuses_a_bitstream_that_misses_timing(tmp_path: Path, overlay_dir: Path, wns: str,
                                                    whs: str, message: str):
    process, log, out = run_stubbed(tmp_path, "pynq-z2", overlay_dir / "stepvit_accel.v",
                                    wns=wns, whs=whs)
    assert process.returncode == 1
    assert f"ERROR: stepvit overlay: {message}" in process.stdout
    assert "launch_runs impl_1" in log
    assert not (out / "stepvit.bit").exists() and not (out / "stepvit.hwh").exists()


def test_tcl_port_check_reads_the_top_module_alone(tmp_path: Path, overlay_dir: Path):
    """A submodule after the top that has the port the top lacks must not satisfy the check."""
    text = (overlay_dir / "stepvit_accel.v").read_text()
    top = re.search(r"module\s+stepvit_accel\s*\(.*?endmodule", text, re.S)
    renamed = re.sub(r"\bs_axis_tlast\b", "s_axis_tend", top.group(0))
    decoy = "\nmodule decoy(s_axis_tlast);\n  input s_axis_tlast;\nendmodule\n"
    broken = tmp_path / "stepvit_accel.v"
    broken.write_text(text[:top.start()] + renamed + text[top.end():] + decoy)
    process, log, out = run_stubbed(tmp_path, "pynq-z2", broken)
    assert process.returncode == 1, process.stdout
    assert "has no port s_axis_tlast" in process.stdout
    assert "create_project" not in log


def test_tcl_refuses_verilog_without_a_port(tmp_path: Path, overlay_dir: Path):
    text = (overlay_dir / "stepvit_accel.v").read_text()
    broken = tmp_path / "stepvit_accel.v"
    broken.write_text(re.sub(r"\bs_axis_tlast\b", "s_axis_tend", text))
    process, log, out = run_stubbed(tmp_path, "pynq-z2", broken)
    assert process.returncode == 1
    assert "stepvit_accel in" in process.stdout and "has no port s_axis_tlast" in process.stdout
    assert "create_project" not in log
    assert not (out / "stepvit.bit").exists()


def test_overlay_command_refuses_an_unknown_board(export_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture):
    assert main(["overlay", str(export_dir), "--board", "nope", "--out", str(tmp_path)]) == 2
    assert "stepvit overlay: error: unknown board 'nope'" in capsys.readouterr().err


def test_overlay_takes_the_design_of_a_build_folder(export_dir: Path, tmp_path: Path):
    """`stepvit rtl --board B --build DIR` sized the design; the overlay of DIR is that one."""
    build = record_design(tmp_path / "build", load_export(export_dir), 4, "kv260")
    out = tmp_path / "overlay"
    assert main(["overlay", str(export_dir), "--build", str(tmp_path / "build"), "--out",
                 str(out)]) == 0
    info = yaml.safe_load((out / "overlay.json").read_text())
    assert (info["lanes"], info["board"]) == (4, "kv260") == (build["lanes"], build["board"])
    assert "set board_name kv260\n" in (out / "board.tcl").read_text()
    assert yaml.safe_load((out / "design.json").read_text()) == build


def test_overlay_refuses_a_conflicting_lanes_or_a_folder_without_a_record(
        export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    export = load_export(export_dir)
    record_design(tmp_path / "build", export, 4, "kv260")
    out = str(tmp_path / "overlay")
    assert main(["overlay", str(export_dir), "--build", str(tmp_path / "build"), "--lanes", "2",
                 "--out", out]) == 2
    assert capsys.readouterr().err == (
        f"stepvit overlay: error: {tmp_path / 'build'} holds a 4-lane design of export "
        f"{export.config_hash:08x}; --lanes 2 conflicts (drop --lanes or use another --build)\n")
    (tmp_path / "old").mkdir()
    assert main(["overlay", str(export_dir), "--build", str(tmp_path / "old"), "--out",
                 out]) == 2
    assert "holds no design.json" in capsys.readouterr().err
    assert main(["overlay", str(export_dir), "--out", out]) == 2
    assert capsys.readouterr().err == (
        "stepvit overlay: error: overlay needs --board NAME (pynq-z2, kv260, ...) or a --build "
        "folder whose design names its board\n")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_overlay_copies_the_builds_verilog_of_this_export_and_generator(
        export_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture):
    """Generating a large design takes minutes: the overlay of a build folder takes its
    files when the build is of this export by this generator, and generates otherwise."""
    import stepvit.rtl.build_folder as build_folder
    import stepvit.rtl.generate as generate

    build = tmp_path / "build"
    assert main(["rtl", str(export_dir), "--build", str(build), "--lanes", "2"]) == 0
    capsys.readouterr()
    generated = generate.generate

    def refuse(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(generate, "generate", refuse)
    out = tmp_path / "overlay"
    assert main(["overlay", str(export_dir), "--build", str(build), "--board", "pynq-z2",
                 "--out", str(out)]) == 0
    assert "the Verilog of" in capsys.readouterr().err
    for name in ("stepvit_accel.v", "stepvit_accel.il", "report.json"):
        assert (out / name).read_bytes() == (build / name).read_bytes()
    # new generator code: generated again (and the same Verilog, as nothing changed)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return generated(*args, **kwargs)

    monkeypatch.setattr(generate, "generate", counted)
    monkeypatch.setattr(build_folder, "generator_fingerprint", lambda: "0" * 16)
    again = tmp_path / "again"
    assert main(["overlay", str(export_dir), "--build", str(build), "--board", "pynq-z2",
                 "--out", str(again)]) == 0
    assert calls == [1] and "the Verilog of" not in capsys.readouterr().err
    assert (again / "stepvit_accel.v").read_bytes() == (build / "stepvit_accel.v").read_bytes()
