"""The AXI read master's Verilog under Icarus (cocotb), against a board's simulated DDR.

:class:`AxiTileTop` puts :class:`~stepvit.rtl.tile_buffer.TileBuffer` (the
:class:`~stepvit.rtl.axi_reader.AxiBurstReader` and the memory it fills) behind ports named as
the accelerator's AXI master will be (``m_axi_ar*``, ``m_axi_r*``).
:class:`AxiReaderSimulation` writes it as Verilog with ``amaranth.back.verilog``, builds it
once with cocotb's Icarus runner and runs fetches through it (``sim/tb_axi_reader.py``)
against :class:`~stepvit.sim.axi_memory.AxiReadMemory` with the board's ``ddr`` figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring

from stepvit.model.export.errors import StepvitError
from stepvit.rtl.boards import Board
from stepvit.rtl.tile_buffer import TileBuffer
from stepvit.sim.runner import TIMESCALE, SimulationFailed, _failure_messages
from stepvit.sim.tb_axi_reader import CONFIG_VARIABLE

TOP = "axi_tile_top"
TESTBENCH = "stepvit.sim.tb_axi_reader"
#: The AXI master's read channels, as the reader names them; the top adds ``m_axi_``.
AXI_READ_PORTS = ("arvalid", "arready", "araddr", "arlen", "arsize", "arburst",
                  "rvalid", "rready", "rdata", "rresp", "rlast")
AXI_PREFIX = "m_axi_"
#: The tile buffer's own ports, kept by name.
TILE_PORTS = ("fetch", "base", "words", "fetching", "filled", "swap", "read_addr",
              "read_data", "error")
#: Beats a word of the test top: two, so the Verilog's word assembly is in the path.
BEATS_PER_WORD = 2


class AxiTileTop(wiring.Component):
    """A :class:`TileBuffer` with its AXI ports named ``m_axi_*``.

    Parameters
    ----------
    board : Board
        Its ``ddr`` figures give the beat's width and the longest burst.
    depth : int
        Words a bank holds.
    """

    def __init__(self, board: Board, *, depth: int) -> None:
        ddr = board.ddr
        self._tile = TileBuffer(data_width=ddr.data_width,
                                word_width=BEATS_PER_WORD * ddr.data_width, depth=depth,
                                max_burst=ddr.max_burst)
        members = self._tile.signature.members
        super().__init__({**{name: members[name] for name in TILE_PORTS},
                          **{AXI_PREFIX + name: members[name] for name in AXI_READ_PORTS}})

    def elaborate(self, platform: object) -> Module:
        """Connect the tile buffer's ports to the renamed ones."""
        m = Module()
        m.submodules.tile = tile = self._tile
        outputs = {"fetching", "filled", "read_data", "error", "arvalid", "araddr", "arlen",
                   "arsize", "arburst", "rready"}
        for name in (*TILE_PORTS, *AXI_READ_PORTS):
            outer = getattr(self, name if name in TILE_PORTS else AXI_PREFIX + name)
            inner = getattr(tile, name)
            m.d.comb += outer.eq(inner) if name in outputs else inner.eq(outer)
        return m


def expected_words(memory: np.ndarray, base: int, words: int, word_bytes: int) -> list[int]:
    """Return the ``words`` little-endian words of ``word_bytes`` bytes at byte ``base``."""
    run = np.asarray(memory, dtype=np.uint8)[base:base + words * word_bytes]
    return [int.from_bytes(run[i * word_bytes:(i + 1) * word_bytes].tobytes(), "little")
            for i in range(words)]


def mismatches(expected: list[int], received: list[int]) -> list[str]:
    """Return one line per word that differs (and one for a count that differs)."""
    lines = [f"word {index}: expected {want:#x}, got {got:#x}"
             for index, (want, got) in enumerate(zip(expected, received)) if want != got]
    if len(expected) != len(received):
        lines.append(f"expected {len(expected)} words, got {len(received)}")
    return lines


class AxiReaderSimulation:
    """The AXI tile top of ``board``, as Verilog, built with Icarus in ``build_dir``.

    Parameters
    ----------
    board : Board
        The board whose ``ddr`` figures give the master's shape (and the memory's, unless a
        run names another board folder).
    build_dir : str or Path
        Folder for the Verilog, the compiled simulation, configurations and results.
    depth : int
        Words a bank of the tile holds: the longest run.
    """

    def __init__(self, board: Board, build_dir: str | Path, *, depth: int) -> None:
        self.board, self.depth = board, depth
        self.word_bytes = BEATS_PER_WORD * board.ddr.beat_bytes
        self.build_dir = Path(build_dir).resolve()
        self.runner = build_icarus(AxiTileTop(board, depth=depth), TOP, self.build_dir)

    def run(self, memory: np.ndarray, *, base: int, words: int, board: Board | None = None,
            flip: int | None = None, error_address: int | None = None,
            arready_seed: int | None = None, name: str = "run") -> dict[str, Any]:
        """Fetch ``words`` words from byte ``base`` of ``memory``; return what arrived.

        Parameters
        ----------
        memory : numpy.ndarray
            ``uint8`` bytes the simulated DDR holds.
        base, words : int
            The run.
        board : Board, optional
            Whose ``ddr`` latency and bandwidth the memory has (default: the built board's).
        flip : int, optional
            A byte the memory inverts the cycle after the fetch starts.
        error_address : int, optional
            A byte whose beat the memory answers with SLVERR.
        arready_seed : int, optional
            Hold ``arready`` low on random cycles (a quarter of them), from this seed.
        name : str
            Names the run's files in the build folder.

        Returns
        -------
        dict
            ``words`` (as read back from the bank), ``error`` (the flag), ``fetch_cycle``
            (the cycle ``fetch`` was registered), ``cycles`` (from it to the last beat),
            ``counters`` (:class:`~stepvit.sim.axi_memory.MemoryCounters` as a dict) and
            ``violations`` (bus rules the master broke).

        Raises
        ------
        SimulationFailed
            If the testbench fails or writes no result.
        """
        return run_testbench(self.runner, TESTBENCH, TOP, "fetch_run", self.build_dir, name, {
            "board": str((board or self.board).folder),
            "memory": np.asarray(memory, dtype=np.uint8).tobytes().hex(),
            "base": base, "words": words, "flip": flip, "error_address": error_address,
            "arready_seed": arready_seed,
            "timeout_cycles": 100 * (words * BEATS_PER_WORD + 100)})


def build_icarus(top: wiring.Component, name: str, build_dir: Path) -> Any:
    """Write ``top`` as Verilog module ``name`` in ``build_dir``, build it with Icarus.

    Returns cocotb's runner, built.

    Raises
    ------
    StepvitError
        If Icarus Verilog is not installed.
    """
    from cocotb_tools.runner import get_runner

    if shutil.which("iverilog") is None:
        raise StepvitError("iverilog not found on PATH: install Icarus Verilog "
                           "(`make tools` or apt-get install iverilog)")
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{name}.v"
    source.write_text(verilog.convert(top, name=name, emit_src=False))
    runner = get_runner("icarus")
    # Verilog-2005, as stepvit.sim.runner builds the accelerator for Icarus (see there)
    runner.build(sources=[source], hdl_toplevel=name, build_args=["-g2005"],
                 build_dir=build_dir, timescale=TIMESCALE, log_file=build_dir / "build.log")
    return runner


def run_testbench(runner: Any, testbench: str, top: str, testcase: str, build_dir: Path,
                  name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run cocotb ``testcase`` of module ``testbench`` on a built ``top`` with ``config``.

    The configuration is written as JSON (with ``results``, the file the testbench writes
    its outcome to) and named in the testbench's ``STEPVIT_SIM_CONFIG``; the files are
    named after ``name`` in ``build_dir``. Returns the outcome the testbench wrote.

    Raises
    ------
    SimulationFailed
        If the testbench fails or writes no result.
    """
    from cocotb_tools.check_results import get_results

    config_path = build_dir / f"{name}.config.json"
    results_path = build_dir / f"{name}.results.json"
    results_xml = build_dir / f"{name}.results.xml"
    log_path = build_dir / f"{name}.log"
    results_path.unlink(missing_ok=True)
    config_path.write_text(json.dumps({**config, "results": str(results_path)}))
    try:
        runner.test(test_module=testbench, hdl_toplevel=top, testcase=testcase,
                    extra_env={CONFIG_VARIABLE: str(config_path)}, build_dir=build_dir,
                    test_dir=build_dir, results_xml=str(results_xml), timescale=TIMESCALE,
                    log_file=log_path)
    except (SystemExit, RuntimeError):
        pass  # judged by the results below
    try:
        failed = get_results(results_xml)[1]
    except RuntimeError:
        failed = 1
    if failed or not results_path.exists():
        failures = _failure_messages(results_xml) or ["the simulator stopped abnormally"]
        raise SimulationFailed(f"simulation {name} failed ({log_path}): "
                               f"{'; '.join(failures)[:2000]}", failures, None)
    return json.loads(results_path.read_text())


__all__ = ["AXI_PREFIX", "AxiReaderSimulation", "AxiTileTop", "BEATS_PER_WORD",
           "build_icarus", "expected_words", "mismatches", "run_testbench"]
