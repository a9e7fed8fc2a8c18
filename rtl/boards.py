"""The boards: one folder per board under ``boards/`` with a ``board.yaml`` and the Tcl.

``board.yaml`` holds the part, the Yosys family, the clock, the DMA width, the resources
of docs/architecture.md (Boards), the share of them the accelerator may use and the figures
of the accelerator's memory port (``ddr``: :class:`DdrFigures`, which the DDR planning model
and the simulated AXI memory take). This reader is the
one place that knows the layout; it needs numpy-free Python and pyyaml only.

The Vivado flow in ``boards/common`` is every board's: the board's values reach it as
``board.tcl``, which :func:`lay_out_tcl` writes from ``board.yaml`` beside the flow.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from stepvit.model.export.errors import StepvitError

#: The ``boards/`` folder of the source tree (the package is installed in editable mode).
BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"

#: The board when a command is given none (and its build folder names none).
DEFAULT_BOARD = "pynq-z2"

#: The Vivado batch script, its shared flow and the board's values, as an overlay folder
#: holds them (the first two from ``boards/common``, the third from :func:`board_tcl`).
OVERLAY_TCL = "build_overlay.tcl"
FLOW_TCL = "stepvit_overlay.tcl"
BOARD_TCL = "board.tcl"

_REQUIRED_KEYS = ("name", "part", "family", "clock_mhz", "dma_width", "resources", "budget", "ps")
_RESOURCE_KEYS = ("lut", "ff", "bram36", "dsp")
_FAMILIES = ("xc7", "xcup")
#: The processing systems the flow knows, by their Vivado IP name.
_PS_IPS = ("processing_system7", "zynq_ultra_ps_e")
_PS_KEYS = ("ip", "board_part", "gp_port", "hp_port")
_DDR_KEYS = ("data_width", "max_burst", "bytes_per_cycle", "latency_cycles")
#: The data widths an AXI master may have, in bits.
_AXI_WIDTHS = (32, 64, 128, 256, 512, 1024)
#: The most beats an AXI INCR burst may have (AXI4; AXI3 allows 16).
_AXI_MAX_BURST = 256
# A value board.tcl sets: one Tcl word, nothing for Tcl to substitute.
_TCL_WORD = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass(frozen=True)
class DdrFigures:
    """The accelerator's memory port, as ``board.yaml``'s ``ddr`` section gives it.

    Attributes
    ----------
    data_width : int
        Bits of the accelerator's AXI master (an AXI beat).
    max_burst : int
        Beats an INCR burst may have (16 on AXI3, up to 256 on AXI4).
    bytes_per_cycle : float
        Bytes the port moves per accelerator cycle at the board's ``clock_mhz``, on average
        (at most a beat a cycle).
    latency_cycles : int
        Accelerator cycles from a read address accepted to the read's first beat.
    """

    data_width: int
    max_burst: int
    bytes_per_cycle: float
    latency_cycles: int

    @property
    def beat_bytes(self) -> int:
        """Bytes of one beat."""
        return self.data_width // 8


@dataclass(frozen=True)
class Board:
    """One board, as its ``board.yaml`` describes it.

    Attributes
    ----------
    name : str
        Board name, also the folder name (``pynq-z2``).
    folder : Path
        The board's folder (``board.yaml`` and the overlay Tcl).
    part : str
        Xilinx part number for Vivado.
    family : str
        Yosys ``synth_xilinx -family`` (``xc7`` or ``xcup``).
    clock_mhz : float
        Accelerator clock; latency in µs is cycles / clock_mhz.
    dma_width : int
        Width in bits of the PS memory port that the DMA uses.
    resources : dict[str, int]
        ``lut``, ``ff``, ``bram36``, ``dsp`` (and ``uram`` where present).
    budget : dict[str, float]
        ``lut_fraction`` and ``bram_fraction``: the share the accelerator may use.
    ps : dict
        The processing system: ``ip``, ``board_part``, ``gp_port``, ``hp_port``.
    ddr : DdrFigures or None
        The accelerator's memory port: width, burst, bandwidth and latency; None for a
        ``board.yaml`` without a ``ddr`` section (an overlay folder's copy made before it
        existed): only what plans or simulates the memory needs it (:meth:`memory`).
    """

    name: str
    folder: Path
    part: str
    family: str
    clock_mhz: float
    dma_width: int
    resources: dict
    budget: dict
    ps: dict
    ddr: DdrFigures | None

    def memory(self) -> DdrFigures:
        """Return the ``ddr`` figures; refuse clearly where ``board.yaml`` has none.

        Raises
        ------
        StepvitError
            The board file has no ``ddr`` section.
        """
        if self.ddr is None:
            raise StepvitError(f"{self.folder / 'board.yaml'}: no 'ddr' section (the memory "
                               f"port's data_width, max_burst, bytes_per_cycle, "
                               f"latency_cycles): copy one from boards/pynq-z2/board.yaml")
        return self.ddr


def board_names() -> list[str]:
    """Return the names of the boards in ``boards/``, sorted."""
    if not BOARDS_DIR.is_dir():
        return []
    return sorted(path.parent.name for path in BOARDS_DIR.glob("*/board.yaml"))


def load_board(name_or_folder: str | Path) -> Board:
    """Read and check a board's ``board.yaml``.

    Parameters
    ----------
    name_or_folder : str or Path
        A board name from ``boards/`` (``pynq-z2``) or the path of a board folder.

    Raises
    ------
    StepvitError
        If the board is unknown or its ``board.yaml`` lacks a field or has a bad value.
    """
    folder = Path(name_or_folder)
    if not (folder / "board.yaml").is_file():
        folder = BOARDS_DIR / str(name_or_folder)
    path = folder / "board.yaml"
    if not path.is_file():
        known = ", ".join(board_names()) or "none"
        raise StepvitError(f"unknown board {str(name_or_folder)!r} (known: {known})")
    try:
        fields = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise StepvitError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(fields, dict):
        raise StepvitError(f"{path}: expected a mapping")
    for key in _REQUIRED_KEYS:
        if key not in fields:
            raise StepvitError(f"{path}: missing field {key!r}")
    if fields["family"] not in _FAMILIES:
        raise StepvitError(f"{path}: family: expected one of {_FAMILIES}, got {fields['family']!r}")
    if not isinstance(fields["clock_mhz"], (int, float)) or fields["clock_mhz"] <= 0:
        raise StepvitError(f"{path}: clock_mhz: expected a positive number")
    for key in _RESOURCE_KEYS:
        if not isinstance(fields["resources"].get(key), int):
            raise StepvitError(f"{path}: resources.{key}: expected an integer")
    for key in ("lut_fraction", "bram_fraction"):
        value = fields["budget"].get(key)
        if not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise StepvitError(f"{path}: budget.{key}: expected a number in (0, 1]")
    _check_tcl_values(path, fields)
    ddr = ddr_figures(path, fields["ddr"]) if "ddr" in fields else None
    return Board(
        name=str(fields["name"]),
        folder=folder,
        part=str(fields["part"]),
        family=str(fields["family"]),
        clock_mhz=float(fields["clock_mhz"]),
        dma_width=int(fields["dma_width"]),
        resources=dict(fields["resources"]),
        budget=dict(fields["budget"]),
        ps=dict(fields["ps"]),
        ddr=ddr,
    )


def _is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float, not a bool (YAML's ``true`` is not a figure)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    """Whether ``value`` is an int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def ddr_figures(path: Path, ddr: object) -> DdrFigures:
    """Check ``board.yaml``'s ``ddr`` section and return its figures.

    Raises
    ------
    StepvitError
        Naming the file and the field that is missing or bad.
    """
    if not isinstance(ddr, dict):
        raise StepvitError(f"{path}: ddr: expected a mapping")
    for key in _DDR_KEYS:
        if key not in ddr:
            raise StepvitError(f"{path}: missing field 'ddr.{key}'")
    width = ddr["data_width"]
    if not _is_integer(width) or width not in _AXI_WIDTHS:
        raise StepvitError(f"{path}: ddr.data_width: expected an AXI data width "
                           f"{_AXI_WIDTHS} in bits, got {width!r}")
    burst = ddr["max_burst"]
    if not _is_integer(burst) or not 1 <= burst <= _AXI_MAX_BURST:
        raise StepvitError(f"{path}: ddr.max_burst: expected an integer of 1-{_AXI_MAX_BURST} "
                           f"beats, got {burst!r}")
    rate = ddr["bytes_per_cycle"]
    if not _is_number(rate) or not 0 < rate <= width // 8:
        raise StepvitError(f"{path}: ddr.bytes_per_cycle: expected a positive number of at "
                           f"most a beat ({width // 8} bytes), got {rate!r}")
    latency = ddr["latency_cycles"]
    if not _is_integer(latency) or latency < 1:
        raise StepvitError(f"{path}: ddr.latency_cycles: expected a positive integer, "
                           f"got {latency!r}")
    return DdrFigures(data_width=width, max_burst=burst, bytes_per_cycle=float(rate),
                      latency_cycles=latency)


def _check_tcl_values(path: Path, fields: dict) -> None:
    """Refuse the values board.tcl sets unless each is one plain Tcl word."""
    if not isinstance(fields["dma_width"], int) or fields["dma_width"] <= 0:
        raise StepvitError(f"{path}: dma_width: expected a positive integer")
    if not isinstance(fields["ps"], dict):
        raise StepvitError(f"{path}: ps: expected a mapping")
    for key in _PS_KEYS:
        if key not in fields["ps"]:
            raise StepvitError(f"{path}: missing field 'ps.{key}'")
    if fields["ps"]["ip"] not in _PS_IPS:
        raise StepvitError(f"{path}: ps.ip: expected one of {_PS_IPS}, got {fields['ps']['ip']!r}")
    for key, value in [("part", fields["part"]),
                       *((f"ps.{key}", fields["ps"][key]) for key in _PS_KEYS)]:
        if not _TCL_WORD.match(str(value)):
            raise StepvitError(f"{path}: {key}: {value!r} is not a part or port name")


#: The PS port a ``weights="ddr"`` accelerator's ``m_axi`` read master reaches DDR through,
#: per PS kind: a second high-performance port beside the DMA's ``hp_port`` (HP0), so the
#: weight loads and the frames do not share one port.
DDR_PORTS = {"processing_system7": "S_AXI_HP1", "zynq_ultra_ps_e": "S_AXI_HP1_FPD"}


def board_tcl(board: Board) -> str:
    """Return ``board.tcl``: the board's values as the overlay flow reads them.

    With a ``ddr`` section it also sets ``ddr_port`` (:data:`DDR_PORTS`) and ``ddr_width``
    (``ddr.data_width``), which the flow uses when the accelerator has ``m_axi_*`` ports.
    """
    values = {
        "board_name": board.name,
        "part": board.part,
        "board_part": board.ps["board_part"],
        "ps_ip": board.ps["ip"],
        "gp_port": board.ps["gp_port"],
        "hp_port": board.ps["hp_port"],
        "clock_mhz": f"{board.clock_mhz:g}",
        "dma_width": board.dma_width,
    }
    if board.ddr is not None:
        values.update(ddr_port=DDR_PORTS[board.ps["ip"]], ddr_width=board.ddr.data_width)
    lines = [f"# The values of the {board.name} board.yaml for {OVERLAY_TCL}, written by "
             f"`stepvit overlay`:", "# change board.yaml and lay the folder out again."]
    return "\n".join([*lines, *(f"set {name} {value}" for name, value in values.items())]) + "\n"


def lay_out_tcl(board: Board, folder: Path) -> list[str]:
    """Put the overlay's Tcl in ``folder``: the flow, ``board.tcl`` and ``board.yaml``.

    Returns
    -------
    list of str
        The file names written.
    """
    for name in (OVERLAY_TCL, FLOW_TCL):
        shutil.copy2(BOARDS_DIR / "common" / name, folder / name)
    (folder / BOARD_TCL).write_text(board_tcl(board))
    shutil.copy2(board.folder / "board.yaml", folder / "board.yaml")
    return [OVERLAY_TCL, BOARD_TCL, FLOW_TCL, "board.yaml"]
