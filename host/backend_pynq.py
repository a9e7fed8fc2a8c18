"""The pynq backend: the accelerator on a PYNQ board, through an AXI DMA and AXI-Lite registers.

The overlay (``boards/common/build_overlay.tcl``) holds the PS, an AXI DMA named
:data:`DMA_NAME` (MM2S to ``s_axis``, S2MM from ``m_axis``, simple mode) and the
accelerator named :data:`ACCEL_NAME`. Buffers are allocated once and reused; a batch of
up to ``max_batch`` images is one MM2S transfer of their frames back to back (the DMA
raises TLAST on its last word; the accelerator's ``BATCH`` register says how many frames
it holds) and one S2MM transfer of their packets (the accelerator raises TLAST on the last
word of the batch's last packet), so a board pays the per-transfer cost once per batch.
Every wait polls the channel with a deadline of its own batch, so a stuck stream ends in
:class:`DeviceTimeout`; a result transfer that ends early (a dropped frame's error packet
always carries TLAST) is reported with the images it covered.

What the deadlines cover: a DMA that does not start (its stream clock stopped, or held in
reset: pynq's own driver would spin on it forever) and a transfer that does not finish (a
stream without TLAST, a stalled accelerator). What no driver can bound: a read or write of
a register whose AXI-Lite slave has no clock, which stalls the bus and with it the CPU. The
DMA is checked first, and the accelerator shares its clock and reset in the overlay, so a
DMA that starts says the accelerator's registers are safe to read.

A ``weights="ddr"`` overlay (its ``overlay.json`` beside the ``.bit`` says ``weights: ddr``)
serves every export of one shape: ``CONFIG_HASH`` holds the shape hash, and opening an
export loads its weight image (``EXPORT/weights-lanes<P>[-stem<S>]-axi<W>.img``, which
``stepvit rtl --weights ddr`` writes; the image needs the generator's plan, so it is made off
the board; a file of another size than ``overlay.json``'s ``weight_image_bytes`` is refused)
into a ``pynq.allocate`` buffer, writes its address to ``WEIGHTS_ADDR``, starts the load
(``CONTROL_LOAD_WEIGHTS``), polls ``STATUS`` with a deadline, compares the accelerator's
checksum with the file's (``image_checksum``) and writes the export's masks (the design
resets them to every step active). Swapping a model is opening another export of the shape.
An overlay whose residual stream is in DDR (``overlay.json``'s ``stream_ddr``) also gets an
activation buffer of ``ACTIVATION_BYTES`` (a register of the design), allocated once, its
address written to ``ACTIVATIONS_ADDR`` before the first load.

pynq is imported when the backend is opened: off a board it is either missing or finds
no device, and both end in one clear :class:`StepvitError`; so does a board process
without root or without the PYNQ environment (``XILINX_XRT``), which ``sudo`` drops.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from stepvit.host.accelerator import STAGES, Accelerator, InferenceResult
from stepvit.model.export import Export, widths_fit
from stepvit.model.export.errors import DeviceTimeout, StepvitError
from stepvit.rtl.build_folder import export_image_path, image_stem_lanes, image_widths
from stepvit.rtl.protocol import (
    ACCEL_ID,
    BATCH_BITS,
    CONTROL_CLEAR_ERROR,
    CONTROL_LOAD_WEIGHTS,
    STATUS_FRAME_ERROR,
    STATUS_WEIGHTS_ERROR,
    STATUS_WEIGHTS_LOADED,
    STATUS_WEIGHTS_LOADING,
    image_words,
    mask_register_values,
    offset,
    pack_images,
    result_words,
    unpack_results,
)
from stepvit.rtl.weight_image import image_checksum

#: Block-design cell names that the overlay Tcl gives the DMA and the accelerator.
DMA_NAME = "axi_dma_0"
ACCEL_NAME = "stepvit_accel_0"

#: File name (without suffix) of the overlay's bitstream and hardware handoff.
OVERLAY_NAME = "stepvit"
#: The overlay's description, beside its ``.bit`` (``stepvit overlay`` writes it): a
#: ``weights: ddr`` overlay loads each export's weight image; without it, a rom overlay.
OVERLAY_DESCRIPTION = "overlay.json"

#: The most bytes one simple-mode transfer moves: the overlay sets the DMA's buffer length
#: register to 26 bits (``c_sg_length_width``), its maximum.
DMA_MAX_TRANSFER_BYTES = 2**26 - 1

#: The S2MM channel's length register (PG021): bytes the last transfer received.
DMA_S2MM_LENGTH = 0x58

#: AXI DMA registers (PG021), simple mode: each channel's control (DMACR) and status
#: (DMASR, at control + 4). DMACR bit 0 runs the channel, bit 2 soft-resets the whole DMA;
#: DMASR bit 0 says the channel is halted, bits 4 to 6 hold its errors.
DMA_MM2S_CONTROL = 0x00
DMA_S2MM_CONTROL = 0x30
DMA_STATUS_OFFSET = 0x04
DMA_RUN = 1 << 0
DMA_SOFT_RESET = 1 << 2
DMA_HALTED = 1 << 0
DMA_ERRORS = {
    1 << 4: "DMAIntErr (internal error)",
    1 << 5: "DMASlvErr (the memory answered with an error)",
    1 << 6: "DMADecErr (no memory at the buffer's address: is the HP port connected?)",
}

#: The two channels: what the messages call them and where their control register is.
MM2S = "MM2S (image in)"
S2MM = "S2MM (result out)"
DMA_CONTROL = {MM2S: DMA_MM2S_CONTROL, S2MM: DMA_S2MM_CONTROL}

#: How a process on a PYNQ board gets what pynq needs (root and the board's environment).
BOARD_SHELL_HINT = ("on the board run stepvit from a root login shell, `sudo -i`, which sources "
                    "the PYNQ environment (plain `sudo stepvit` drops XILINX_XRT and the PYNQ "
                    "venv's PATH)")


def overlay_files(overlay: str | Path) -> tuple[Path, Path]:
    """Return the overlay's ``.bit`` and ``.hwh``, which PYNQ needs side by side.

    Parameters
    ----------
    overlay : path
        A ``.bit`` file, or a folder holding ``stepvit.bit`` and ``stepvit.hwh``.

    Raises
    ------
    StepvitError
        If either file is missing.
    """
    path = Path(overlay)
    bitfile = path / f"{OVERLAY_NAME}.bit" if path.is_dir() else path
    if bitfile.suffix != ".bit":
        raise StepvitError(f"overlay: expected a .bit file or a folder, got {path}")
    hwh = bitfile.with_suffix(".hwh")
    for required in (bitfile, hwh):
        if not required.is_file():
            raise StepvitError(f"overlay: {required} is missing (PYNQ needs the .bit and the "
                               f".hwh of the same name)")
    return bitfile, hwh


def overlay_description(bitfile: str | Path) -> dict[str, Any]:
    """Return the ``overlay.json`` beside ``bitfile`` (``{}`` if there is none: a rom overlay).

    Raises
    ------
    StepvitError
        If the file cannot be read, or says ``weights: ddr`` without its AXI data width.
    """
    path = Path(bitfile).with_name(OVERLAY_DESCRIPTION)
    if not path.is_file():
        return {}
    try:
        description = json.loads(path.read_text())
        if description.get("weights", "rom") == "ddr":
            int(description["data_width"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StepvitError(f"{path}: not an overlay description ({error!r}): copy the one "
                           f"`stepvit overlay` wrote beside stepvit.bit") from None
    return description


def missing_board_environment() -> list[str]:
    """Return what pynq needs on a board that this process lacks: root, ``XILINX_XRT``.

    Without ``XILINX_XRT`` pynq does not load its embedded (Zynq) device and finds none;
    without root it cannot map the device's registers (``Root permissions required.``).
    """
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root (running as uid {os.geteuid()})")
    if not os.environ.get("XILINX_XRT"):
        missing.append("XILINX_XRT (the PYNQ environment)")
    return missing


def dma_status_text(status: int) -> str:
    """Return a DMASR value in hex with the names of its error bits."""
    errors = [name for bit, name in DMA_ERRORS.items() if status & bit]
    return f"DMASR 0x{status:08x}" + (f": {', '.join(errors)}" if errors else "")


def image_label(first: int, count: int) -> str:
    """Return how messages name ``count`` images from ``first``: "image 3", "images 0-63"."""
    return f"image {first}" if count == 1 else f"images {first}-{first + count - 1}"


class PynqAccelerator(Accelerator):
    """The accelerator in a PYNQ overlay.

    Parameters
    ----------
    export : Export
        The export the overlay was built from (its config hash is checked), or, on a ddr
        overlay, any export of the overlay's shape (its shape hash is checked and its
        weight image loaded).
    overlay : path
        The overlay's ``.bit``, or the folder with ``stepvit.bit`` and ``stepvit.hwh``.
    timeout_s : float
        How long the DMA may take for one batch before :class:`DeviceTimeout`.
    max_batch : int
        Images per DMA transfer, which the preallocated buffers hold; more images go
        through in batches of this size (1: one transfer per image).

    Raises
    ------
    StepvitError
        If the files are missing, pynq is missing or finds no device, the overlay lacks
        the DMA or the accelerator, or the accelerator's ID or config hash do not match;
        on a ddr overlay also another shape, a missing weight image, one of another size
        than the overlay's design loads, a load that ended in an AXI error response or a
        checksum other than the image's.
    DeviceTimeout
        On a ddr overlay, a weight load that does not finish within ``timeout_s``.
    """

    name = "pynq"

    def __init__(self, export: Export, overlay: str | Path, *, timeout_s: float = 5.0,
                 max_batch: int = 64) -> None:
        if timeout_s <= 0:
            raise StepvitError(f"the DMA timeout must be positive, got {timeout_s} s")
        frame_words = image_words(export.arch["image_shape"])
        largest = min(2**BATCH_BITS - 1, DMA_MAX_TRANSFER_BYTES // (4 * frame_words))
        if not 1 <= max_batch <= largest:
            raise StepvitError(f"max_batch must be 1..{largest} (the BATCH register and the "
                               f"DMA's longest transfer), got {max_batch}")
        super().__init__(export)
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self._frames: Any = None
        self._packets: Any = None
        self._batch_register: int | None = None
        self._frame_words = frame_words
        self._packet_words = result_words(export)
        self._weights: Any = None
        self._activations: Any = None
        bitfile, _ = overlay_files(overlay)
        self.description = overlay_description(bitfile)
        #: ``"ddr"``: the overlay loads the export's weight image; ``"rom"``: it holds them.
        self.weights = "ddr" if self.description.get("weights") == "ddr" else "rom"
        try:
            import pynq
        except ImportError:
            raise StepvitError("the pynq backend needs the pynq package: it runs on a PYNQ "
                               "board") from None
        missing = missing_board_environment()
        if missing:
            raise StepvitError(f"the pynq backend runs on a PYNQ board, as root with the "
                               f"board's environment; this process lacks {' and '.join(missing)}"
                               f": {BOARD_SHELL_HINT}")
        try:
            self._overlay = pynq.Overlay(str(bitfile))
        except (RuntimeError, OSError) as error:
            raise StepvitError(f"cannot load overlay {bitfile}: {error} (the pynq backend runs "
                               f"on a PYNQ board)") from None
        for name in (DMA_NAME, ACCEL_NAME):
            self._check_ip(name)
        description = self._overlay.ip_dict[DMA_NAME]
        self._dma_registers = pynq.MMIO(description["phys_addr"], description["addr_range"])
        self._start_dma()
        self._dma = getattr(self._overlay, DMA_NAME)
        self._accel = getattr(self._overlay, ACCEL_NAME)
        self._check_device()
        try:
            # rows back to back: a batch is one contiguous transfer from the buffer's start
            self._frames = pynq.allocate(shape=(max_batch, self._frame_words), dtype=np.uint32)
            self._packets = pynq.allocate(shape=(max_batch, self._packet_words),
                                          dtype=np.uint32)
        except RuntimeError as error:
            self._release()
            raise StepvitError(f"cannot allocate DMA buffers: {error}") from None
        except BaseException:
            self._release()
            raise
        if self.weights == "ddr":
            try:
                self._load_weights(pynq)
            except BaseException:
                self._release()
                raise

    def design_widths(self) -> dict[str, int]:
        """Return this ddr overlay's bit widths (``overlay.json``; the export's if absent)."""
        widths = self.description.get("bit_widths")
        return self.export.bit_widths if widths is None else {
            key: int(value) for key, value in widths.items()}

    def stem_lanes(self) -> int | None:
        """Return this ddr overlay's stem lanes (``None``: the export has no stem).

        ``overlay.json``'s ``stem_lanes``, else its ``rtl_report``'s (overlays written
        before it said so), else the core's lanes (the ``LANES`` register).
        """
        if not self.export.arch.get("stem"):
            return None
        recorded = self.description.get("stem_lanes") or (
            self.description.get("rtl_report") or {}).get("stem_lanes")
        return image_stem_lanes(self.export.arch, self.read_register("LANES"),
                                None if recorded is None else int(recorded))

    def weight_image_path(self) -> Path:
        """Return the export's weight image for this ddr overlay's layout.

        The layout: the lanes, the stem's lanes (:meth:`stem_lanes`), the AXI data width,
        the overlay's bit widths and its stem's schedule (``overlay.json``'s
        ``stem_chunk_major``).
        """
        return export_image_path(self.export.path, self.read_register("LANES"),
                                 int(self.description["data_width"]),
                                 image_widths(self.export.bit_widths, self.design_widths()),
                                 bool(self.description.get("stem_chunk_major")),
                                 stem_lanes=self.stem_lanes())

    def weight_image_bytes(self) -> int | None:
        """Return the size of the weight image this ddr overlay's design loads, if known.

        ``overlay.json``'s ``weight_image_bytes``, else its ``rtl_report``'s
        ``weight_image.bytes`` (the build's image: every export of the shape packs to that
        size at the design's layout); ``None`` where the overlay says neither.
        """
        size = self.description.get("weight_image_bytes")
        if size is None:
            try:
                size = self.description["rtl_report"]["weight_image"]["bytes"]
            except (KeyError, TypeError):
                return None
        try:
            return int(size)
        except (TypeError, ValueError):
            return None

    def _design_label(self) -> str:
        """Return the overlay's design as messages name it: lanes, stem lanes, AXI width."""
        stem = self.stem_lanes()
        return (f"{self.read_register('LANES')} lanes"
                f"{'' if stem is None else f' + {stem} stem lanes'}, "
                f"{self.description['data_width']}-bit AXI")

    def _load_weights(self, pynq: Any) -> None:
        """Load the export's weight image into a ddr overlay; then write the export's masks.

        Raises
        ------
        StepvitError
            A missing image, one of another size than the design loads (an image packed
            for another design's layout), a load that ended in an AXI error response, or
            a checksum other than the file's.
        DeviceTimeout
            A load that does not finish within the timeout.
        """
        path = self.weight_image_path()
        if not path.is_file():
            raise StepvitError(
                f"{path} is missing: a ddr overlay loads the export's weight image; make it "
                f"with `stepvit rtl {self.export.path} --build BUILD --weights ddr`, BUILD the "
                f"overlay's ddr build ({self._design_label()}), and copy it beside the export")
        image = path.read_bytes()
        design_bytes = self.weight_image_bytes()
        if design_bytes is not None and len(image) != design_bytes:
            raise StepvitError(
                f"{path} holds {len(image)} bytes, but this ddr overlay's design loads a "
                f"weight image of {design_bytes} bytes: the file was packed for another "
                f"design (other lanes, stem lanes or bit widths); rewrite it with `stepvit rtl "
                f"{self.export.path} --build BUILD --weights ddr`, BUILD the overlay's ddr "
                f"build ({self._design_label()}), which writes the export's image for that "
                f"build's design")
        expected = image_checksum(image)
        if self.description.get("stream_ddr") and self._activations is None:
            self._give_activations(pynq)
        try:
            self._weights = pynq.allocate(shape=(len(image),), dtype=np.uint8)
        except RuntimeError as error:
            raise StepvitError(f"cannot allocate the weight image's buffer: {error}") from None
        self._weights[:] = np.frombuffer(image, dtype=np.uint8)
        self._weights.flush()
        address = int(self._weights.physical_address)
        self.write_register("WEIGHTS_ADDR", address)
        self.write_register("CONTROL", CONTROL_LOAD_WEIGHTS)
        deadline = time.monotonic() + self.timeout_s
        while True:
            status = self.read_register("STATUS")
            if status & STATUS_WEIGHTS_ERROR and not status & STATUS_WEIGHTS_LOADING:
                raise StepvitError(
                    f"the weight load of {path.name} from 0x{address:08x} ended in an AXI "
                    f"error response (STATUS 0x{status:x}): the accelerator's m_axi port "
                    f"cannot read that DDR (is it connected to an HP port?)")
            if status & STATUS_WEIGHTS_LOADED and not status & STATUS_WEIGHTS_LOADING:
                break
            if time.monotonic() > deadline:
                raise DeviceTimeout(
                    f"the weight load of {path.name} ({len(image)} bytes from 0x{address:08x}) "
                    f"did not finish within {self.timeout_s} s (STATUS 0x{status:x}): the "
                    f"accelerator's m_axi port gets no answer; check the overlay's HP port")
        loaded = (self.read_register("WEIGHTS_CHECKSUM_HI") << 32
                  | self.read_register("WEIGHTS_CHECKSUM_LO"))
        if loaded != expected:
            raise StepvitError(
                f"the accelerator's checksum of the loaded weights is 0x{loaded:016x}, "
                f"{path} has 0x{expected:016x}: the image was corrupted on its way to the "
                f"accelerator; open the export again to reload it")
        self._apply_budget(self.budget)  # the design reset its masks to every step active

    def _give_activations(self, pynq: Any) -> None:
        """Allocate the activation buffer the design's stream lives in; write its address.

        Raises
        ------
        StepvitError
            If the design asks for no bytes (an overlay.json that says ``stream_ddr`` over a
            bitstream without the stream in DDR), or the buffer cannot be allocated, or its
            address does not read back.
        """
        size = self.read_register("ACTIVATION_BYTES")
        if size == 0:
            raise StepvitError("overlay.json says the residual stream is in DDR, but the "
                               "accelerator's ACTIVATION_BYTES reads 0: the bitstream is not "
                               "that design's; build the overlay again")
        try:
            self._activations = pynq.allocate(shape=(size,), dtype=np.uint8)
        except RuntimeError as error:
            raise StepvitError(f"cannot allocate the activation buffer ({size} bytes): "
                               f"{error}") from None
        address = int(self._activations.physical_address)
        self.write_register("ACTIVATIONS_ADDR", address)
        if self.read_register("ACTIVATIONS_ADDR") != address:
            raise StepvitError(f"ACTIVATIONS_ADDR does not read back 0x{address:08x}")

    def read_register(self, name: str) -> int:
        """Return the accelerator register called ``name`` (``rtl/protocol.py``)."""
        return int(self._accel.read(offset(name)))

    def write_register(self, name: str, value: int) -> None:
        """Write ``value`` to the accelerator register called ``name``."""
        self._accel.write(offset(name), int(value))

    def _check_ip(self, name: str) -> None:
        if name not in self._overlay.ip_dict:
            found = ", ".join(sorted(self._overlay.ip_dict)) or "none"
            raise StepvitError(f"overlay has no IP named {name!r} (found: {found}); build it "
                               f"with the build_overlay.tcl `stepvit overlay` lays out")

    def _dma_status(self, direction: str) -> int:
        return int(self._dma_registers.read(DMA_CONTROL[direction] + DMA_STATUS_OFFSET))

    def _start_dma(self) -> None:
        """Run both DMA channels and wait, with a deadline, until neither reports halted.

        pynq's DMA driver does the same when it is created, but waits without a limit.
        """
        for control in DMA_CONTROL.values():
            self._dma_registers.write(control, DMA_RUN)
        deadline = time.monotonic() + self.timeout_s
        while True:
            halted = [direction for direction in DMA_CONTROL
                      if self._dma_status(direction) & DMA_HALTED]
            if not halted:
                return
            if time.monotonic() > deadline:
                states = ", ".join(f"{direction} {dma_status_text(self._dma_status(direction))}"
                                   for direction in halted)
                raise DeviceTimeout(
                    f"DMA {DMA_NAME} did not start within {self.timeout_s} s ({states}: halted): "
                    f"its clock is stopped or its reset held; check the overlay's clock and "
                    f"reset (the .hwh beside the .bit sets the PL clock) and reload it")

    def _check_device(self) -> None:
        accel_id = self.read_register("ID")
        if accel_id != ACCEL_ID:
            raise StepvitError(f"{ACCEL_NAME} is not a stepvit accelerator: ID register reads "
                               f"0x{accel_id:08x}, expected 0x{ACCEL_ID:08x}")
        config_hash = self.read_register("CONFIG_HASH")
        if self.weights == "ddr":
            if config_hash != self.export.shape_hash:
                raise StepvitError(
                    f"the ddr overlay was built for shape hash 0x{config_hash:08x}, but the "
                    f"export {self.export.path} has shape hash 0x{self.export.shape_hash:08x}: "
                    f"build an overlay for that shape (stepvit rtl EXPORT --build B --weights "
                    f"ddr, then stepvit overlay EXPORT --build B)")
            beyond = widths_fit(self.export.bit_widths, self.design_widths())
            if beyond:
                raise StepvitError(
                    f"the ddr overlay's bit widths do not hold the export {self.export.path}'s: "
                    f"{', '.join(beyond)}; build the overlay with a larger --width-margin "
                    f"(stepvit rtl EXPORT --build B --weights ddr --width-margin N)")
        elif config_hash == self.export.shape_hash != self.export.config_hash:
            raise StepvitError(
                f"the overlay's CONFIG_HASH 0x{config_hash:08x} is the export's shape hash: a "
                f"ddr overlay, but no {OVERLAY_DESCRIPTION} saying so beside its .bit; copy "
                f"the one `stepvit overlay` wrote")
        elif config_hash != self.export.config_hash:
            raise StepvitError(
                f"the overlay was built for config hash 0x{config_hash:08x}, but the export "
                f"{self.export.path} has 0x{self.export.config_hash:08x}: rebuild the overlay "
                f"for this export (stepvit overlay)")
        for register, expected in (("T_MAX", self.export.t_max),
                                   ("NUM_MODULES", len(self.export.module_names))):
            value = self.read_register(register)
            if value != expected:
                raise StepvitError(f"accelerator register {register} reads {value}, the export "
                                   f"has {expected}")

    def _apply_budget(self, budget: int | None) -> None:
        for index, value in enumerate(mask_register_values(self.export.budget_mask(budget))):
            self.write_register(f"MASK{index}", value)
            read_back = self.read_register(f"MASK{index}")
            if read_back != value:
                raise StepvitError(f"mask register MASK{index} reads 0x{read_back:x} after "
                                   f"writing 0x{value:x}")

    def _infer(self, images: np.ndarray) -> InferenceResult:
        stage_seconds = dict.fromkeys(STAGES, 0.0)
        # a design that streams its weights counts the cycles its core waited for them
        streams = self.weights == "ddr" and bool(self.description.get("stream_weights"))
        stalls_before = self.read_register("WEIGHT_STALLS") if streams else 0
        stem_before = self.read_register("STEM_WEIGHT_STALLS") if streams else 0
        in_ddr = streams and bool(self.description.get("stream_ddr"))
        stream_before = self.read_register("STREAM_STALLS") if in_ddr else 0
        maps_in_ddr = in_ddr and bool(self.description.get("stem_maps_ddr"))
        maps_before = self.read_register("STEM_MAP_STALLS") if maps_in_ddr else 0
        # cycles with an image in flight: the batches' stream cycles (idle gaps between
        # transfers not counted), where an image's own cycle word is its latency
        busy_before = self.read_register("BUSY_CYCLES")
        results = []
        for first in range(0, images.shape[0], self.max_batch):
            chunk = images[first:first + self.max_batch]
            results.append(self._infer_chunk(chunk, first, stage_seconds))
        logits, predicted, cycles, spike_totals = (np.concatenate(parts) for parts in zip(*results))
        stalls = ((self.read_register("WEIGHT_STALLS") - stalls_before) % (1 << 32)
                  if streams else None)
        stem_stalls = ((self.read_register("STEM_WEIGHT_STALLS") - stem_before) % (1 << 32)
                       if streams else None)
        stream_stalls = ((self.read_register("STREAM_STALLS") - stream_before) % (1 << 32)
                         if in_ddr else None)
        map_stalls = ((self.read_register("STEM_MAP_STALLS") - maps_before) % (1 << 32)
                      if maps_in_ddr else None)
        busy = (self.read_register("BUSY_CYCLES") - busy_before) % (1 << 32)
        return InferenceResult(logits=logits, predicted=predicted, cycles=cycles,
                               spike_totals=spike_totals, stage_seconds=stage_seconds,
                               stream_cycles=busy, weight_stall_cycles=stalls,
                               stem_weight_stall_cycles=stem_stalls,
                               stream_stall_cycles=stream_stalls,
                               stem_map_stall_cycles=map_stalls)

    def _infer_chunk(self, chunk: np.ndarray, first: int,
                     stage_seconds: dict[str, float]) -> tuple[np.ndarray, ...]:
        count = chunk.shape[0]
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            stage_seconds[stage] += now - clock
            clock = now

        pack_images(chunk, out=self._frames[:count])
        lap("pack")
        self._frames[:count].flush()
        lap("copy_in")
        if self._batch_register != count:
            self.write_register("BATCH", count)
            self._batch_register = count
        send, recv = self._dma.sendchannel, self._dma.recvchannel
        images = image_label(first, count)
        self._transfer(recv, S2MM, self._packets[:count], images)
        self._transfer(send, MM2S, self._frames[:count], images)
        deadline = time.monotonic() + self.timeout_s
        self._wait(recv, S2MM, images, deadline)
        received = int(self._dma_registers.read(DMA_S2MM_LENGTH))
        expected = 4 * self._packet_words * count
        if received != expected:
            self._abort()
            raise StepvitError(
                f"the accelerator ended the result transfer of {images} after {received} "
                f"bytes, not {expected}: a frame was dropped (its error packet ends the "
                f"transfer); the DMA was reset and the buffers freed")
        self._wait(send, MM2S, images, deadline)
        lap("execute")
        self._packets[:count].invalidate()
        lap("copy_out")
        unpacked = unpack_results(np.array(self._packets[:count]),
                                  self.export.arch["num_classes"])
        lap("unpack")
        if self.read_register("STATUS") & STATUS_FRAME_ERROR:
            # A dropped frame (its class word says so): clear the flag for the next batch.
            self.write_register("CONTROL", CONTROL_CLEAR_ERROR)
        return unpacked

    def _transfer(self, channel: Any, direction: str, buffer: Any, image: str) -> None:
        """Start one transfer; pynq refusing it (a halted channel) closes the accelerator."""
        try:
            channel.transfer(buffer)
        except (RuntimeError, ValueError) as error:
            status = dma_status_text(self._dma_status(direction))
            self._abort()
            raise StepvitError(f"DMA {direction} refused {image}: {error} ({status}); "
                               f"the DMA was reset and the buffers freed") from None

    def _wait(self, channel: Any, direction: str, image: str, deadline: float) -> None:
        """Poll ``channel`` until idle; a DMA error or the deadline closes the accelerator."""
        while not channel.idle:
            if channel.error:
                status = dma_status_text(self._dma_status(direction))
                self._abort()
                raise StepvitError(f"DMA {direction} reported an error on {image} "
                                   f"({status}); the DMA was reset and the buffers freed")
            if time.monotonic() > deadline:
                self._abort()
                raise DeviceTimeout(
                    f"DMA {direction} did not finish {image} within {self.timeout_s} s "
                    f"(a stream without TLAST or a stalled accelerator); the DMA was reset and "
                    f"the buffers freed: reload the overlay")

    def _abort(self) -> None:
        """Reset the DMA so that it stops touching the buffers, then free them."""
        self._dma_registers.write(DMA_MM2S_CONTROL, DMA_SOFT_RESET)
        self.close()

    def _release(self) -> None:
        for buffer in (self._frames, self._packets, self._weights, self._activations):
            if buffer is not None:
                buffer.freebuffer()
        self._frames = None
        self._packets = None
        self._weights = None
        self._activations = None
