"""A test double of the ``pynq`` package: an overlay whose accelerator is the golden model.

It implements what ``host/backend_pynq.py`` uses of pynq (the same calls in 3.0, 3.1 and
4.0: ``Overlay`` with ``ip_dict`` and IP attributes created on first use, ``MMIO``,
``allocate`` buffers with ``flush``/``invalidate``/``freebuffer``, the AXI DMA's
``sendchannel``/``recvchannel`` with ``transfer``/``idle``/``error`` and the IP's
``read``/``write``) and answers each frame with the result packet that the golden model
gives under the mask registers; a transfer holds as many frames as the ``BATCH`` register
says (one when it is 0), and a dropped frame's packet ends the S2MM transfer, whose
length register then says so, as the accelerator's TLAST does. Tests that compare its
answers with the golden model compare the golden model with itself: they check the
driver, not the hardware.

With ``weights="ddr"`` it is a ddr overlay: ``CONFIG_HASH`` reads the shape hash, the masks
reset to every step active, ``CONTROL_LOAD_WEIGHTS`` reads the ``allocate`` buffer at
``WEIGHTS_ADDR`` (every buffer has a ``physical_address``) and checksums it, and a frame
before a completed load fails the test (the accelerator would hold it).

The DMA's registers (control, status) are modelled as far as the driver reads them, and
its channels behave as pynq's do: ``transfer`` raises ``RuntimeError`` on a halted or busy
channel, creating the DMA driver starts both channels and waits while they are halted.
Time is the board's :class:`FakeClock` when a test puts it in place of the driver's
``time`` module: every ``monotonic()`` call is one poll, ``POLL_SECONDS`` long.
Tests only: it is never used by the product.
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass, field

import numpy as np

from stepvit.host.backend_pynq import (
    ACCEL_NAME,
    DMA_HALTED,
    DMA_MM2S_CONTROL,
    DMA_NAME,
    DMA_RUN,
    DMA_S2MM_CONTROL,
    DMA_S2MM_LENGTH,
    DMA_SOFT_RESET,
    DMA_STATUS_OFFSET,
)
from stepvit.model.export import Export
from stepvit.model.golden import GoldenModel
from stepvit.rtl.protocol import (
    ACCEL_ID,
    CONTROL_CLEAR_ERROR,
    CONTROL_LOAD_WEIGHTS,
    STATUS_FRAME_ERROR,
    STATUS_WEIGHTS_ERROR,
    STATUS_WEIGHTS_LOADED,
    STATUS_WEIGHTS_LOADING,
    image_words,
    offset,
    pack_results,
    unpack_images,
)
from stepvit.rtl.weight_image import image_checksum

#: Alignment the double's DMA demands: a 128-bit memory side (KV260, ZCU104) without DRE.
DMA_ALIGN_BYTES = 16

#: Where the double's DMA sits in the address map.
DMA_BASE = 0x4040_0000

#: Physical address of the double's first ``allocate`` buffer; each next one is a MiB on.
BUFFER_BASE = 0x1800_0000

#: DMASR bits the double reports: idle, and the decode error of an unmapped address.
DMA_IDLE = 1 << 1
DMA_DECODE_ERROR = 1 << 6

#: Virtual seconds that pass at each ``FakeClock.monotonic()`` call.
POLL_SECONDS = 0.001

#: Status polls (DMASR reads, ``idle`` reads) after which the double calls the driver
#: stuck: a driver that spins without a deadline fails its test instead of hanging it.
MAX_POLLS = 2_000_000


class FakeClock:
    """A stand-in for the ``time`` module whose ``monotonic`` advances one poll per call."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += POLL_SECONDS
        return self.now

    def perf_counter(self) -> float:
        return time.perf_counter()


class FakeBuffer(np.ndarray):
    """A numpy array that records flushes and whether it was freed."""

    def __array_finalize__(self, obj: object) -> None:
        self.freed = getattr(obj, "freed", False)
        self.physical_address = getattr(obj, "physical_address", 0)

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
        What the CONFIG_HASH register reads (the export's config hash, or its shape hash
        with ``weights="ddr"``).
    no_device : bool
        ``Overlay`` raises ``RuntimeError: No Devices Found``, as pynq does off-board.
    load_error : Exception or None
        What ``Overlay`` raises instead (pynq's ``PermissionError`` without root, say).
    never_idle : bool
        The DMA accepts transfers and never finishes them.
    dma_stuck_halted : bool
        The DMA's channels stay halted when told to run (a stopped clock or a held reset).
    seconds_per_image : float
        Time on :attr:`clock` that each image's transfers take.
    stalled_result : int or None
        Index of the transfer whose result never comes: its S2MM transfer never finishes.
    channel_error : tuple of (str, int) or None
        ``("MM2S" or "S2MM", transfer)``: that transfer ends in a decode error.
    refused_transfer : tuple of (str, int) or None
        ``("MM2S" or "S2MM", transfer)``: pynq refuses to start that transfer.
    corrupt_logit : bool
        The accelerator adds one to the first logit of every packet.
    dropped_frames : set of int
        Indices (counted from the first frame) of frames the accelerator drops: their
        packet has class 0xFFFFFFFF and STATUS.frame_error is set until CONTROL clears it.
    weights : str
        ``"rom"`` or ``"ddr"`` (a ddr overlay: see the module's docstring).
    load_response_error : bool
        ddr: a weight load ends with STATUS_WEIGHTS_ERROR (an AXI error response).
    load_never_ends : bool
        ddr: a weight load stays STATUS_WEIGHTS_LOADING.
    checksum_flip : int
        ddr: XORed into the checksum the accelerator reports (a corrupted transfer).
    loads : list of bytes
        ddr: the images the accelerator loaded, in order.
    accesses : list of tuple
        Every accelerator register access: ``("r", offset)`` or ``("w", offset, value)``.
    """

    export: Export
    config_hash: int = 0
    no_device: bool = False
    load_error: Exception | None = None
    never_idle: bool = False
    corrupt_logit: bool = False
    dropped_frames: set = field(default_factory=set)
    dma_stuck_halted: bool = False
    seconds_per_image: float = 0.0
    stalled_result: int | None = None
    channel_error: tuple[str, int] | None = None
    refused_transfer: tuple[str, int] | None = None
    weights: str = "rom"
    load_response_error: bool = False
    load_never_ends: bool = False
    checksum_flip: int = 0
    loads: list = field(default_factory=list)
    accesses: list = field(default_factory=list)
    frames_seen: int = 0
    polls: int = 0
    allocated: list = field(default_factory=list)
    dma_control_writes: list = field(default_factory=list)
    dma_halted: dict = field(default_factory=lambda: {"MM2S": True, "S2MM": True})
    registers: dict = field(default_factory=dict)
    clock: FakeClock = field(default_factory=FakeClock)
    dma: FakeDMA | None = None

    def __post_init__(self) -> None:
        self.config_hash = (self.export.shape_hash if self.weights == "ddr"
                            else self.export.config_hash)
        self.golden = GoldenModel(self.export)

    def load_weights(self) -> None:
        """Start a weight load from WEIGHTS_ADDR: read the buffer there and checksum it."""
        address = self.registers.get(offset("WEIGHTS_ADDR"), 0)
        buffers = [b for b in self.allocated if b.physical_address == address and not b.freed]
        if len(buffers) != 1:
            raise AssertionError(f"WEIGHTS_ADDR 0x{address:x} is no allocate buffer's address")
        image = buffers[0].tobytes()
        self.loads.append(image)
        checksum = image_checksum(image) ^ self.checksum_flip
        self.registers[offset("WEIGHTS_CHECKSUM_LO")] = checksum & 0xFFFF_FFFF
        self.registers[offset("WEIGHTS_CHECKSUM_HI")] = checksum >> 32
        status = self.registers[offset("STATUS")] & STATUS_FRAME_ERROR
        if self.load_never_ends:
            status |= STATUS_WEIGHTS_LOADING
        elif self.load_response_error:
            status |= STATUS_WEIGHTS_ERROR
        else:
            status |= STATUS_WEIGHTS_LOADED
        self.registers[offset("STATUS")] = status

    def poll(self) -> None:
        """Count one status poll; past :data:`MAX_POLLS` the driver is spinning forever."""
        self.polls += 1
        if self.polls > MAX_POLLS:
            raise AssertionError(f"the driver polled the DMA {MAX_POLLS} times: it would spin "
                                 f"here forever")

    def write_dma_register(self, address: int, value: int) -> None:
        """Write a DMA control register: run, stop or soft-reset a channel."""
        self.dma_control_writes.append((address, value))
        direction = {DMA_MM2S_CONTROL: "MM2S", DMA_S2MM_CONTROL: "S2MM"}.get(address)
        if direction is None:
            return
        if value & DMA_SOFT_RESET:
            self.dma_halted = {"MM2S": True, "S2MM": True}
        else:
            self.dma_halted[direction] = not (value & DMA_RUN) or self.dma_stuck_halted

    def read_dma_register(self, address: int) -> int:
        """Read a DMA status register (DMASR: halted, idle, decode error) or S2MM_LENGTH."""
        if address == DMA_S2MM_LENGTH:
            return self.dma.received_bytes if self.dma is not None else 0
        self.poll()
        direction = {DMA_MM2S_CONTROL + DMA_STATUS_OFFSET: "MM2S",
                     DMA_S2MM_CONTROL + DMA_STATUS_OFFSET: "S2MM"}[address]
        status = DMA_HALTED if self.dma_halted[direction] else 0
        if self.dma is not None:
            channel = self.dma.channel(direction)
            status |= DMA_IDLE if channel.idle else 0
            if channel.error:
                status |= DMA_DECODE_ERROR | DMA_HALTED  # an error halts the channel
        return status

    def masks(self) -> np.ndarray:
        rows = [self.registers[offset(f"MASK{index}")]
                for index in range(len(self.export.module_names))]
        return np.array([[(row >> step) & 1 for step in range(self.export.t_max)]
                         for row in rows], dtype=np.uint8)

    def batch(self) -> int:
        """Frames per transfer: the BATCH register (0 reads as 1)."""
        return max(1, self.registers.get(offset("BATCH"), 0))

    def compute(self, frame: np.ndarray) -> np.ndarray:
        """Return the result packet of one input frame."""
        if self.weights == "ddr" and not self.registers[offset("STATUS")] & STATUS_WEIGHTS_LOADED:
            raise AssertionError("a frame before a completed weight load: the accelerator "
                                 "would hold it forever")
        images = unpack_images(frame[None], self.export.arch["image_shape"])
        result = self.golden.run(images, masks=self.masks())
        logits = result.logits.numpy().copy()
        if self.corrupt_logit:
            logits[:, 0] += 1
        cycles = 1000 + result.work["ac_ops"].numpy()
        # images back to back overlap: the fake's stream adds half an image's cycles
        self.registers[offset("BUSY_CYCLES")] = (
            self.registers[offset("BUSY_CYCLES")] + int(cycles[0]) // 2) % (1 << 32)
        predicted = result.predicted.numpy()
        if self.frames_seen in self.dropped_frames:
            predicted = np.array([-1])
            self.registers[offset("STATUS")] |= STATUS_FRAME_ERROR
        self.frames_seen += 1
        return pack_results(logits, predicted, cycles, result.layer_spike_totals().numpy())[0]


class FakeChannel:
    """One DMA channel: a transfer finishes ``seconds_per_image`` after both have started."""

    def __init__(self, dma: FakeDMA, direction: str) -> None:
        self.dma = dma
        self.direction = direction
        self.array: np.ndarray | None = None
        self.frame = -1
        self.done_at: float | None = None

    @property
    def idle(self) -> bool:
        board = self.dma.board
        board.poll()
        if self.array is None:
            return True
        if (board.never_idle or self.done_at is None or self.error
                or (self.direction == "S2MM" and self.frame == board.stalled_result)):
            return False
        return board.clock.now >= self.done_at

    @property
    def error(self) -> bool:
        return self.dma.board.channel_error == (self.direction, self.frame)

    def transfer(self, array: np.ndarray) -> None:
        board = self.dma.board
        if board.dma_halted[self.direction]:
            raise RuntimeError("DMA channel not started")
        if not self.idle:
            raise RuntimeError("DMA channel not idle")
        if board.refused_transfer == (self.direction, self.frame + 1):
            board.dma_halted[self.direction] = True
            raise RuntimeError("DMA channel not started")
        owner = array.base if array.base is not None else array
        start = array.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
        if start % DMA_ALIGN_BYTES:
            raise RuntimeError("DMA does not support unaligned transfers; Starting address "
                               f"must be aligned to {DMA_ALIGN_BYTES} bytes.")
        self.array = array
        self.frame += 1
        self.done_at = None
        self.dma.step()


class FakeDMA:
    """pynq's AxiDMA: creating it starts both channels and waits while they are halted."""

    def __init__(self, board: FakeBoard) -> None:
        for control in (DMA_MM2S_CONTROL, DMA_S2MM_CONTROL):
            board.write_dma_register(control, DMA_RUN)
        if any(board.dma_halted.values()):
            raise AssertionError("pynq's AxiDMA would spin here forever: the DMA stays halted")
        self.board = board
        self.sendchannel = FakeChannel(self, "MM2S")
        self.recvchannel = FakeChannel(self, "S2MM")
        self.received_bytes = 0
        self.transfers: list[tuple[int, int]] = []  # (frames sent, packets received)
        board.dma = self

    def channel(self, direction: str) -> FakeChannel:
        return self.sendchannel if direction == "MM2S" else self.recvchannel

    def step(self) -> None:
        send, recv = self.sendchannel, self.recvchannel
        if send.array is None or recv.array is None or send.frame != recv.frame:
            return
        board = self.board
        frames = np.asarray(send.array).reshape(-1, image_words(board.export.arch["image_shape"]))
        packets = recv.array.reshape(len(frames), -1)
        if len(frames) != board.batch() or packets.shape[0] != len(frames):
            raise AssertionError(f"a transfer of {len(frames)} frames and {packets.shape[0]} "
                                 f"packets with BATCH {board.batch()}")
        received = 0
        for frame, packet in zip(frames, packets):
            dropped = board.frames_seen in board.dropped_frames
            packet[:] = board.compute(frame)
            received += 1
            if dropped:  # its error packet carries TLAST: the S2MM transfer ends here
                break
        self.received_bytes = received * packets.shape[1] * 4
        self.transfers.append((len(frames), received))
        send.done_at = recv.done_at = board.clock.now + board.seconds_per_image * len(frames)

    def write(self, address: int, value: int) -> None:
        self.board.write_dma_register(address, value)


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
            offset("BATCH"): 0,
            offset("BUSY_CYCLES"): 0,
        })
        for index, row in enumerate(export.timestep_mask):
            board.registers[offset(f"MASK{index}")] = (
                2**export.t_max - 1 if board.weights == "ddr"  # a ddr design's reset
                else sum(1 << step for step, active in enumerate(row) if active))
        if board.weights == "ddr":
            board.registers.update({offset("WEIGHTS_ADDR"): 0,
                                    offset("WEIGHTS_CHECKSUM_LO"): 0,
                                    offset("WEIGHTS_CHECKSUM_HI"): 0})

    def read(self, address: int) -> int:
        self.board.accesses.append(("r", address))
        return self.board.registers[address]

    def write(self, address: int, value: int) -> None:
        self.board.accesses.append(("w", address, value))
        if address == offset("CONTROL") and value & CONTROL_CLEAR_ERROR:
            self.board.registers[offset("STATUS")] &= ~STATUS_FRAME_ERROR
        if address == offset("CONTROL") and value & CONTROL_LOAD_WEIGHTS:
            if self.board.weights != "ddr":
                raise AssertionError("CONTROL_LOAD_WEIGHTS written to a rom overlay")
            self.board.load_weights()
            return
        self.board.registers[address] = value


def fake_pynq_module(board: FakeBoard) -> types.ModuleType:
    """Return a module object to put in ``sys.modules["pynq"]``."""
    module = types.ModuleType("pynq")
    drivers = {DMA_NAME: FakeDMA, ACCEL_NAME: FakeAccelerator}

    class Overlay:
        def __init__(self, bitfile: str) -> None:
            if board.no_device:
                raise RuntimeError("No Devices Found")
            if board.load_error is not None:
                raise board.load_error
            self.bitfile = bitfile
            self.ip_dict = {DMA_NAME: {"phys_addr": DMA_BASE, "addr_range": 0x10000},
                            ACCEL_NAME: {"phys_addr": 0x43C0_0000, "addr_range": 0x10000},
                            "processing_system7_0": {}}

        def __getattr__(self, name: str) -> object:
            # Like pynq, the IP's driver is created on first use.
            if name not in drivers:
                raise AttributeError(name)
            driver = drivers[name](board)
            setattr(self, name, driver)
            return driver

    class MMIO:
        def __init__(self, base_addr: int, length: int = 4) -> None:
            if base_addr != DMA_BASE:
                raise AssertionError(f"the double maps only the DMA, not 0x{base_addr:x}")
            self.length = length

        def read(self, offset: int) -> int:
            return board.read_dma_register(offset)

        def write(self, offset: int, value: int) -> None:
            board.write_dma_register(offset, value)

    def allocate(shape: tuple[int, ...], dtype: object = "u4") -> FakeBuffer:
        buffer = np.zeros(shape, dtype=dtype).view(FakeBuffer)
        buffer.freed = False
        buffer.physical_address = BUFFER_BASE + 0x10_0000 * len(board.allocated)
        board.allocated.append(buffer)
        return buffer

    module.Overlay = Overlay
    module.MMIO = MMIO
    module.allocate = allocate
    return module
