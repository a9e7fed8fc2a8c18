"""The pynq backend: the accelerator on a PYNQ board, through an AXI DMA and AXI-Lite registers.

The overlay (``boards/<board>/build_overlay.tcl``) holds the PS, an AXI DMA named
:data:`DMA_NAME` (MM2S to ``s_axis``, S2MM from ``m_axis``, simple mode) and the
accelerator named :data:`ACCEL_NAME`. Buffers are allocated once and reused; one image
is one MM2S transfer (the DMA raises TLAST on its last word) and one S2MM transfer (the
accelerator raises TLAST on the last word of its packet). Every wait polls the channel
with a deadline, so a stuck stream ends in :class:`DeviceTimeout`, never in a hang.

pynq is imported when the backend is opened: off a board it is either missing or finds
no device, and both end in one clear :class:`StepvitError`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from stepvit.host.accelerator import (
    STAGES,
    Accelerator,
    InferenceResult,
    image_words,
    pack_images,
    result_words,
    unpack_results,
)
from stepvit.host.errors import DeviceTimeout, StepvitError
from stepvit.host.export import Export
from stepvit.host.registers import ACCEL_ID, CONTROL_CLEAR_ERROR, STATUS_FRAME_ERROR, offset

#: Block-design cell names that the overlay Tcl gives the DMA and the accelerator.
DMA_NAME = "axi_dma_0"
ACCEL_NAME = "stepvit_accel_0"

#: File name (without suffix) of the overlay's bitstream and hardware handoff.
OVERLAY_NAME = "stepvit"

#: Rows of the DMA buffers start 64 bytes apart or a multiple of it: the DMA (without its
#: realignment engine) needs transfers aligned to its memory width, 128 bits at most here.
ROW_ALIGN_WORDS = 16

#: AXI DMA control registers (PG021): MM2S_DMACR; its bit 2 soft-resets the whole DMA.
DMA_MM2S_CONTROL = 0x00
DMA_SOFT_RESET = 1 << 2


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


def aligned_words(words: int) -> int:
    """Return ``words`` rounded up to a whole number of :data:`ROW_ALIGN_WORDS`."""
    return -(-words // ROW_ALIGN_WORDS) * ROW_ALIGN_WORDS


def mask_register_value(mask_row: np.ndarray) -> int:
    """Return the ``MASK<i>`` register value of one mask row: bit ``t`` enables step ``t``."""
    return sum(1 << step for step, active in enumerate(mask_row) if active)


class PynqAccelerator(Accelerator):
    """The accelerator in a PYNQ overlay.

    Parameters
    ----------
    export : Export
        The export the overlay was built from (its config hash is checked).
    overlay : path
        The overlay's ``.bit``, or the folder with ``stepvit.bit`` and ``stepvit.hwh``.
    timeout_s : float
        How long the DMA may take for one image before :class:`DeviceTimeout`.
    max_batch : int
        Images the preallocated DMA buffers hold; larger batches go through in chunks.

    Raises
    ------
    StepvitError
        If the files are missing, pynq is missing or finds no device, the overlay lacks
        the DMA or the accelerator, or the accelerator's ID or config hash do not match.
    """

    name = "pynq"

    def __init__(self, export: Export, overlay: str | Path, *, timeout_s: float = 5.0,
                 max_batch: int = 64) -> None:
        if timeout_s <= 0:
            raise StepvitError(f"the DMA timeout must be positive, got {timeout_s} s")
        if max_batch < 1:
            raise StepvitError(f"max_batch must be at least 1, got {max_batch}")
        super().__init__(export)
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self._frames: Any = None
        self._packets: Any = None
        self._frame_words = image_words(export.arch["image_shape"])
        self._packet_words = result_words(export)
        bitfile, _ = overlay_files(overlay)
        try:
            import pynq
        except ImportError:
            raise StepvitError("the pynq backend needs the pynq package: it runs on a PYNQ "
                               "board") from None
        try:
            self._overlay = pynq.Overlay(str(bitfile))
        except RuntimeError as error:
            raise StepvitError(f"cannot load overlay {bitfile}: {error} (the pynq backend runs "
                               f"on a PYNQ board)") from None
        self._dma = self._ip(DMA_NAME)
        self._accel = self._ip(ACCEL_NAME)
        self._check_device()
        try:
            self._frames = pynq.allocate(
                shape=(max_batch, aligned_words(self._frame_words)), dtype=np.uint32)
            self._packets = pynq.allocate(
                shape=(max_batch, aligned_words(self._packet_words)), dtype=np.uint32)
        except RuntimeError as error:
            self._release()
            raise StepvitError(f"cannot allocate DMA buffers: {error}") from None
        except BaseException:
            self._release()
            raise

    def read_register(self, name: str) -> int:
        """Return the accelerator register called ``name`` (``host/registers.py``)."""
        return int(self._accel.read(offset(name)))

    def write_register(self, name: str, value: int) -> None:
        """Write ``value`` to the accelerator register called ``name``."""
        self._accel.write(offset(name), int(value))

    def _ip(self, name: str) -> Any:
        if name not in self._overlay.ip_dict:
            found = ", ".join(sorted(self._overlay.ip_dict)) or "none"
            raise StepvitError(f"overlay has no IP named {name!r} (found: {found}); build it "
                               f"with boards/<board>/build_overlay.tcl")
        return getattr(self._overlay, name)

    def _check_device(self) -> None:
        accel_id = self.read_register("ID")
        if accel_id != ACCEL_ID:
            raise StepvitError(f"{ACCEL_NAME} is not a stepvit accelerator: ID register reads "
                               f"0x{accel_id:08x}, expected 0x{ACCEL_ID:08x}")
        config_hash = self.read_register("CONFIG_HASH")
        if config_hash != self.export.config_hash:
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
        for index, row in enumerate(self.export.budget_mask(budget)):
            value = mask_register_value(row)
            self.write_register(f"MASK{index}", value)
            read_back = self.read_register(f"MASK{index}")
            if read_back != value:
                raise StepvitError(f"mask register MASK{index} reads 0x{read_back:x} after "
                                   f"writing 0x{value:x}")

    def _infer(self, images: np.ndarray) -> InferenceResult:
        stage_seconds = dict.fromkeys(STAGES, 0.0)
        results = []
        for first in range(0, images.shape[0], self.max_batch):
            chunk = images[first:first + self.max_batch]
            results.append(self._infer_chunk(chunk, first, stage_seconds))
        logits, predicted, cycles, spike_totals = (np.concatenate(parts) for parts in zip(*results))
        return InferenceResult(logits=logits, predicted=predicted, cycles=cycles,
                               spike_totals=spike_totals, stage_seconds=stage_seconds)

    def _infer_chunk(self, chunk: np.ndarray, first: int,
                     stage_seconds: dict[str, float]) -> tuple[np.ndarray, ...]:
        count = chunk.shape[0]
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            stage_seconds[stage] += now - clock
            clock = now

        pack_images(chunk, out=self._frames[:, :self._frame_words])
        lap("pack")
        self._frames[:count].flush()
        lap("copy_in")
        send, recv = self._dma.sendchannel, self._dma.recvchannel
        for row in range(count):
            recv.transfer(self._packets[row, :self._packet_words])
            send.transfer(self._frames[row, :self._frame_words])
            deadline = time.monotonic() + self.timeout_s
            self._wait(send, "MM2S (image in)", first + row, deadline)
            self._wait(recv, "S2MM (result out)", first + row, deadline)
        lap("execute")
        self._packets[:count].invalidate()
        lap("copy_out")
        unpacked = unpack_results(np.array(self._packets[:count, :self._packet_words]),
                                  self.export.arch["num_classes"])
        lap("unpack")
        if self.read_register("STATUS") & STATUS_FRAME_ERROR:
            # A dropped frame (its class word says so): clear the flag for the next batch.
            self.write_register("CONTROL", CONTROL_CLEAR_ERROR)
        return unpacked

    def _wait(self, channel: Any, direction: str, image: int, deadline: float) -> None:
        """Poll ``channel`` until idle; a DMA error or the deadline closes the accelerator."""
        while not channel.idle:
            if channel.error:
                self._abort()
                raise StepvitError(f"DMA {direction} reported an error on image {image}; the "
                                   f"DMA was reset and the buffers freed")
            if time.monotonic() > deadline:
                self._abort()
                raise DeviceTimeout(
                    f"DMA {direction} did not finish image {image} within {self.timeout_s} s "
                    f"(a stream without TLAST or a stalled accelerator); the DMA was reset and "
                    f"the buffers freed: reload the overlay")

    def _abort(self) -> None:
        """Reset the DMA so that it stops touching the buffers, then free them."""
        self._dma.write(DMA_MM2S_CONTROL, DMA_SOFT_RESET)
        self.close()

    def _release(self) -> None:
        for buffer in (self._frames, self._packets):
            if buffer is not None:
                buffer.freebuffer()
        self._frames = None
        self._packets = None
