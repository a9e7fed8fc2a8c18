"""A test double of the ``pynq`` package: an overlay whose accelerator is the golden model.

It implements what ``host/backend_pynq.py`` uses of PYNQ 4 (``Overlay`` with ``ip_dict``
and IP attributes, ``allocate`` buffers with ``flush``/``invalidate``/``freebuffer``, the
AXI DMA's ``sendchannel``/``recvchannel`` with ``transfer``/``idle``/``error`` and the
IP's ``read``/``write``) and answers each frame with the result packet that the golden
model gives under the mask registers. Tests only: it is never used by the product.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import numpy as np

from stepvit.host.accelerator import pack_results, unpack_images
from stepvit.host.backend_pynq import ACCEL_NAME, DMA_NAME
from stepvit.host.export import Export
from stepvit.host.registers import (
    ACCEL_ID,
    CONTROL_CLEAR_ERROR,
    STATUS_FRAME_ERROR,
    offset,
)
from stepvit.model.golden import GoldenModel

#: Alignment the double's DMA demands: a 128-bit memory side (KV260, ZCU104) without DRE.
DMA_ALIGN_BYTES = 16


class FakeBuffer(np.ndarray):
    """A numpy array that records flushes and whether it was freed."""

    def __array_finalize__(self, obj: object) -> None:
        self.freed = getattr(obj, "freed", False)

    def flush(self) -> None:
        """Nothing to write back: host and device share this memory."""

    def invalidate(self) -> None:
        """Nothing to read back: host and device share this memory."""

    def freebuffer(self) -> None:
        self.freed = True


@dataclass
class FakeBoard:
    """What the fake device is and does; tests set its knobs before opening.

    Attributes
    ----------
    export : Export
        The export the "bitstream" was built from (the golden model runs it).
    config_hash : int
        What the CONFIG_HASH register reads.
    no_device : bool
        ``Overlay`` raises ``RuntimeError: No Devices Found``, as pynq does off-board.
    never_idle : bool
        The DMA accepts transfers and never finishes them.
    corrupt_logit : bool
        The accelerator adds one to the first logit of every packet.
    dropped_frames : set of int
        Indices (counted from the first frame) of frames the accelerator drops: their
        packet has class 0xFFFFFFFF and STATUS.frame_error is set until CONTROL clears it.
    """

    export: Export
    config_hash: int = 0
    no_device: bool = False
    never_idle: bool = False
    corrupt_logit: bool = False
    dropped_frames: set = field(default_factory=set)
    frames_seen: int = 0
    allocated: list = field(default_factory=list)
    dma_control_writes: list = field(default_factory=list)
    registers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config_hash = self.export.config_hash
        self.golden = GoldenModel(self.export)

    def masks(self) -> np.ndarray:
        rows = [self.registers[offset(f"MASK{index}")]
                for index in range(len(self.export.module_names))]
        return np.array([[(row >> step) & 1 for step in range(self.export.t_max)]
                         for row in rows], dtype=np.uint8)

    def compute(self, frame: np.ndarray) -> np.ndarray:
        """Return the result packet of one input frame."""
        images = unpack_images(frame[None], self.export.arch["image_shape"])
        result = self.golden.run(images, masks=self.masks())
        logits = result.logits.numpy().copy()
        if self.corrupt_logit:
            logits[:, 0] += 1
        cycles = 1000 + result.work["ac_ops"].numpy()
        predicted = result.predicted.numpy()
        if self.frames_seen in self.dropped_frames:
            predicted = np.array([-1])
            self.registers[offset("STATUS")] |= STATUS_FRAME_ERROR
        self.frames_seen += 1
        return pack_results(logits, predicted, cycles, result.layer_spike_totals().numpy())[0]


class FakeChannel:
    def __init__(self, dma: FakeDMA) -> None:
        self.dma = dma
        self.array: np.ndarray | None = None
        self.idle = False
        self.error = False

    def transfer(self, array: np.ndarray) -> None:
        owner = array.base if array.base is not None else array
        start = array.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
        if start % DMA_ALIGN_BYTES:
            raise RuntimeError("DMA does not support unaligned transfers; Starting address "
                               f"must be aligned to {DMA_ALIGN_BYTES} bytes.")
        self.array = array
        self.idle = False
        self.dma.step()


class FakeDMA:
    def __init__(self, board: FakeBoard) -> None:
        self.board = board
        self.sendchannel = FakeChannel(self)
        self.recvchannel = FakeChannel(self)

    def step(self) -> None:
        send, recv = self.sendchannel, self.recvchannel
        if self.board.never_idle or send.idle or recv.idle:
            return
        if send.array is None or recv.array is None:
            return
        recv.array[:] = self.board.compute(np.asarray(send.array))
        send.idle = recv.idle = True

    def write(self, address: int, value: int) -> None:
        self.board.dma_control_writes.append((address, value))


class FakeAccelerator:
    def __init__(self, board: FakeBoard) -> None:
        self.board = board
        export = board.export
        board.registers.update({
            offset("ID"): ACCEL_ID,
            offset("CONFIG_HASH"): board.config_hash,
            offset("STATUS"): 0,
            offset("T_MAX"): export.t_max,
            offset("NUM_MODULES"): len(export.module_names),
            offset("LANES"): 4,
        })
        for index, row in enumerate(export.timestep_mask):
            board.registers[offset(f"MASK{index}")] = sum(
                1 << step for step, active in enumerate(row) if active)

    def read(self, address: int) -> int:
        return self.board.registers[address]

    def write(self, address: int, value: int) -> None:
        if address == offset("CONTROL") and value & CONTROL_CLEAR_ERROR:
            self.board.registers[offset("STATUS")] &= ~STATUS_FRAME_ERROR
        self.board.registers[address] = value


def fake_pynq_module(board: FakeBoard) -> types.ModuleType:
    """Return a module object to put in ``sys.modules["pynq"]``."""
    module = types.ModuleType("pynq")

    class Overlay:
        def __init__(self, bitfile: str) -> None:
            if board.no_device:
                raise RuntimeError("No Devices Found")
            self.bitfile = bitfile
            self.axi_dma_0 = FakeDMA(board)
            self.stepvit_accel_0 = FakeAccelerator(board)
            self.ip_dict = {DMA_NAME: {}, ACCEL_NAME: {}, "processing_system7_0": {}}

    def allocate(shape: tuple[int, ...], dtype: object = "u4") -> FakeBuffer:
        buffer = np.zeros(shape, dtype=dtype).view(FakeBuffer)
        buffer.freed = False
        board.allocated.append(buffer)
        return buffer

    module.Overlay = Overlay
    module.allocate = allocate
    return module
