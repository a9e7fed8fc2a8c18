"""cocotb testbench of ``stepvit_accel``: streams, registers, frame errors, resets.

The runner (``stepvit.sim.runner``) writes one JSON configuration and names it in the
``STEPVIT_SIM_CONFIG`` environment variable; :func:`load_config` reads it once per test.
Keys: ``frames`` (the words of each good image frame), ``expected`` (packet words per
frame, ``null`` for a word not compared, or ``null`` for no check), ``masks`` (values to
write to ``MASK<i>`` first, or ``null``), ``trained_masks``, ``registers`` (expected
read-only register values), ``num_classes``, ``layer_names``, ``backpressure``, ``seed``,
``timeout_cycles`` (per image) and ``results`` (where the received packets are written);
for the ``ddr_weights`` test of a ``weights="ddr"`` design, ``ddr``: ``board`` (whose
``ddr`` figures the simulated memory takes), ``image`` (the weight image, in hex),
``address`` (where it lies), ``checksum`` (its ``image_checksum``) and ``flip`` (a byte of
the image inverted in the memory, or null).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import (
    AxiLiteBus,
    AxiLiteMaster,
    AxiStreamBus,
    AxiStreamFrame,
    AxiStreamSink,
    AxiStreamSource,
)

from stepvit.rtl.boards import load_board
from stepvit.rtl.protocol import (
    CONTROL_CLEAR_ERROR,
    CONTROL_LOAD_WEIGHTS,
    ERROR_CLASS,
    STATUS_BUSY,
    STATUS_FRAME_ERROR,
    STATUS_STREAM_ERROR,
    STATUS_WEIGHTS_ERROR,
    STATUS_WEIGHTS_LOADED,
    offset,
    packet_mismatches,
    word_names,
)
from stepvit.sim.axi_memory import AxiReadMemory, AxiWriteMemory

#: Cycles a weight load may take, per beat of the image, before the test calls it hung.
LOAD_CYCLES_PER_BEAT = 8
#: ... plus these (the memory's latency and the register reads).
LOAD_CYCLES_SLACK = 2_000

#: Environment variable that names the configuration file.
CONFIG_VARIABLE = "STEPVIT_SIM_CONFIG"
CLOCK_NS = 10


def load_config() -> dict[str, Any]:
    """Return the test configuration written by the runner."""
    return json.loads(Path(os.environ[CONFIG_VARIABLE]).read_text())


def random_pauses(seed: int, busy_fraction: float = 0.4) -> Iterator[bool]:
    """Yield a reproducible random pause pattern (True: no transfer this cycle)."""
    generator = random.Random(seed)
    while True:
        yield generator.random() < busy_fraction


class StreamRecorder:
    """Watch both streams cycle by cycle: input frame starts and output packets.

    Attributes
    ----------
    frame_starts : list of int
        Cycle at which the first word of each input frame was accepted.
    packets : list of dict
        Each output packet (``packet_words`` words): ``words``, ``word_cycles``,
        ``offered_cycle`` (the cycle at which its first word was offered) and ``tlast``
        (the TLAST of each word).
    cycle : int
        Rising edges seen so far.
    frame_words : int or None
        Set it to split input frames by length as well as by TLAST (batches: frames of one
        transfer have no TLAST of their own).
    """

    def __init__(self, dut: Any, packet_words: int) -> None:
        self.dut = dut
        self.cycle = 0
        self.packet_words = packet_words
        self.frame_words: int | None = None
        self.clear()

    def clear(self) -> None:
        """Forget what was seen (after a reset)."""
        self.frame_starts: list[int] = []
        self.packets: list[dict[str, Any]] = []
        self._in_frame = False
        self._frame_count = 0
        self._open: dict[str, Any] | None = None

    async def run(self) -> None:
        """Record forever; values read at a rising edge are those of the cycle it ends."""
        dut = self.dut
        while True:
            await RisingEdge(dut.aclk)
            self.cycle += 1
            if not int(dut.aresetn.value):
                self._in_frame, self._open = False, None
                continue
            if int(dut.s_axis_tvalid.value) and int(dut.s_axis_tready.value):
                if not self._in_frame:
                    self.frame_starts.append(self.cycle)
                    self._frame_count = 0
                self._frame_count += 1
                self._in_frame = not int(dut.s_axis_tlast.value) and \
                    self._frame_count != self.frame_words
            if int(dut.m_axis_tvalid.value):
                if self._open is None:
                    self._open = {"words": [], "word_cycles": [], "tlast": [],
                                  "offered_cycle": self.cycle}
                if int(dut.m_axis_tready.value):
                    self._open["words"].append(int(dut.m_axis_tdata.value))
                    self._open["word_cycles"].append(self.cycle)
                    self._open["tlast"].append(int(dut.m_axis_tlast.value))
                    if len(self._open["words"]) == self.packet_words:
                        self.packets.append(self._open)
                        self._open = None


class Bench:
    """The design under test with its clock, stream drivers, register master and recorder."""

    def __init__(self, dut: Any, config: dict[str, Any]) -> None:
        self.dut = dut
        self.config = config
        reset = {"reset": dut.aresetn, "reset_active_level": False}
        self.source = AxiStreamSource(
            AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk, byte_lanes=1, **reset
        )
        self.sink = AxiStreamSink(
            AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk, byte_lanes=1, **reset
        )
        self.registers = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.aclk, **reset)
        self.recorder = StreamRecorder(dut, config["packet_words"])
        if config.get("backpressure"):
            self.source.set_pause_generator(random_pauses(config["seed"]))
            self.sink.set_pause_generator(random_pauses(config["seed"] + 1))
        cocotb.start_soon(Clock(dut.aclk, CLOCK_NS, unit="ns").start())
        cocotb.start_soon(self.recorder.run())

    async def reset(self, cycles: int = 4) -> None:
        """Hold ``aresetn`` low for ``cycles`` cycles and forget what was recorded."""
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, cycles)
        self.dut.aresetn.value = 1
        await RisingEdge(self.dut.aclk)
        self.recorder.clear()

    async def read(self, name: str) -> int:
        """Read the register called ``name``."""
        return await self.registers.read_dword(offset(name))

    async def write(self, name: str, value: int) -> None:
        """Write the register called ``name``."""
        await self.registers.write_dword(offset(name), value)

    async def write_masks(self) -> None:
        """Write the configured mask values (a time-step budget), if any."""
        for index, value in enumerate(self.config.get("masks") or []):
            await self.write(f"MASK{index}", value)

    async def send(self, frame: list[int]) -> None:
        """Queue one frame on the input stream (TLAST on its last word)."""
        await self.source.send(AxiStreamFrame(frame))

    async def wait_packets(self, count: int) -> list[dict[str, Any]]:
        """Wait until ``count`` packets have arrived; fail naming the image that is late."""
        limit = self.config["timeout_cycles"]
        waited = 0
        while len(self.recorder.packets) < count:
            await RisingEdge(self.dut.aclk)
            waited += 1
            if waited > limit * count:
                missing = len(self.recorder.packets)
                raise AssertionError(
                    f"image {missing}: no result packet after {waited} cycles "
                    f"(cycle {self.recorder.cycle})"
                )
        return self.recorder.packets[:count]

    def check_packets(self, packets: list[dict[str, Any]]) -> list[str]:
        """Compare packets with the expected ones and the measured cycles; return failures."""
        config = self.config
        names = word_names(config["num_classes"], config["layer_names"])
        cycle_word = config["num_classes"] + 1
        failures = []
        for image, packet in enumerate(packets):
            measured = packet["offered_cycle"] - self.recorder.frame_starts[image]
            if packet["words"][cycle_word] != measured:
                failures.append(
                    f"image {image} word {cycle_word} (cycles) at cycle "
                    f"{packet['word_cycles'][cycle_word]}: got {packet['words'][cycle_word]}, "
                    f"measured {measured}"
                )
            if config.get("expected") is not None:
                failures += packet_mismatches(
                    image, config["expected"][image], packet["words"], packet["word_cycles"], names
                )
        return failures

    async def run_frames(self) -> list[str]:
        """Send every configured frame, collect its packet, write results, return failures."""
        frames = self.config["frames"]
        for frame in frames:
            await self.send(frame)
        packets = await self.wait_packets(len(frames))
        failures = self.check_packets(packets)
        for packet, start in zip(packets, self.recorder.frame_starts):
            packet["first_word_cycle"] = start
        results = {"packets": packets, "failures": failures}
        Path(self.config["results"]).write_text(json.dumps(results))
        return failures


def _failure_report(failures: list[str]) -> str:
    shown = failures[:20]
    more = f"\n... and {len(failures) - len(shown)} more" if len(failures) > len(shown) else ""
    return f"{len(failures)} mismatches:\n" + "\n".join(shown) + more


@cocotb.test()
async def stream_images(dut: Any) -> None:
    """Check that every image's packet matches the golden model, also under backpressure."""
    bench = Bench(dut, load_config())
    await bench.reset()
    await bench.write_masks()
    failures = await bench.run_frames()
    assert not failures, _failure_report(failures)


@cocotb.test()
async def register_file(dut: Any) -> None:
    """Check ID, hash and sizes, and that masks reset to the trained masks and take writes."""
    config = load_config()
    bench = Bench(dut, config)
    await bench.reset()
    for name, value in config["registers"].items():
        got = await bench.read(name)
        assert got == value, f"register {name}: read {got:#x}, expected {value:#x}"
    assert await bench.read("STATUS") == 0, "STATUS is not 0 after reset"
    trained = config["trained_masks"]
    for index, value in enumerate(trained):
        got = await bench.read(f"MASK{index}")
        assert got == value, f"MASK{index} after reset: read {got:#x}, expected {value:#x}"
    width = (1 << config["registers"]["T_MAX"]) - 1
    for index, value in enumerate(trained):
        await bench.write(f"MASK{index}", ~value & width)
    for index, value in enumerate(trained):
        got = await bench.read(f"MASK{index}")
        written = ~value & width
        assert got == written, f"MASK{index}: read {got:#x} after writing {written:#x}"
    response = await bench.registers.write(offset("ID"), (0).to_bytes(4, "little"))
    assert int(response.resp) != 0, "a write to the read-only ID register was not refused"
    assert await bench.read("ID") == config["registers"]["ID"], "a write changed ID"
    await bench.reset()
    got = await bench.read("MASK0")
    assert got == trained[0], f"MASK0 after a second reset: read {got:#x}, expected {trained[0]:#x}"


@cocotb.test()
async def frame_errors(dut: Any) -> None:
    """Check that short and long frames give an error packet and STATUS.frame_error."""
    config = load_config()
    bench = Bench(dut, config)
    await bench.reset()
    good = config["frames"][0]
    class_word = config["num_classes"]
    cases = {"short": good[:-1], "long": good + [0x01020304] * 3}
    for name, frame in cases.items():
        if not frame:
            continue  # a one-word frame cannot end early
        await bench.send(frame)
        packet = (await bench.wait_packets(len(bench.recorder.packets) + 1))[-1]
        words = packet["words"]
        assert len(words) == config["packet_words"], (
            f"{name} frame: error packet of {len(words)} words, expected {config['packet_words']}"
        )
        assert words[class_word] == ERROR_CLASS, (
            f"{name} frame word {class_word} at cycle {packet['word_cycles'][class_word]}: "
            f"class {words[class_word]:#x}, expected {ERROR_CLASS:#x}"
        )
        zeros = [index for index, word in enumerate(words)
                 if index not in (class_word, class_word + 1) and word != 0]
        assert not zeros, f"{name} frame: error packet words {zeros} are not 0"
        cycles = await bench.read("CYCLES")
        assert cycles == words[class_word + 1], (
            f"{name} frame: CYCLES register {cycles}, packet cycle word {words[class_word + 1]}"
        )
        images = await bench.read("IMAGES")
        assert images == len(bench.recorder.packets), (
            f"{name} frame: IMAGES register {images}, packets sent {len(bench.recorder.packets)}"
        )
        status = await bench.read("STATUS")
        assert status & STATUS_FRAME_ERROR, f"{name} frame: STATUS {status:#x} lacks frame_error"
        assert not status & STATUS_BUSY, f"{name} frame: STATUS {status:#x} still busy"
        await bench.write("CONTROL", CONTROL_CLEAR_ERROR)
        status = await bench.read("STATUS")
        assert not status & STATUS_FRAME_ERROR, f"{name} frame: CONTROL did not clear {status:#x}"
    bench.config = {**config, "frames": config["frames"][:1], "expected": config["expected"][:1]}
    bench.recorder.clear()
    failures = await bench.run_frames()
    assert not failures, "good frame after the bad ones: " + _failure_report(failures)


@cocotb.test()
async def dropped_frames_between_good_ones(dut: Any) -> None:
    """Check that good and bad frames sent back to back get their packets in order.

    The frames overlap in the accelerator (the next streams in while the one before it
    computes), so a dropped frame's error packet must wait for the packet before it.
    """
    config = load_config()
    bench = Bench(dut, config)
    await bench.reset()
    await bench.write_masks()
    frames, expected = config["frames"], config["expected"]
    good = [frames[i % len(frames)] for i in range(3)]
    sent = [good[0], good[0][:-1], good[1], good[1] + [0x01020304] * 2, good[2]]
    for frame in sent:
        await bench.send(frame)
    packets = await bench.wait_packets(len(sent))
    class_word = config["num_classes"]
    classes = [packet["words"][class_word] for packet in packets]
    assert [word == ERROR_CLASS for word in classes] == [False, True, False, True, False], (
        f"packet classes {[hex(word) for word in classes]}: the error packets are out of order"
    )
    names = word_names(config["num_classes"], config["layer_names"])
    failures = []
    for image, packet in zip((0, 1, 2), (packets[0], packets[2], packets[4])):
        failures += packet_mismatches(image, expected[image % len(expected)], packet["words"],
                                      packet["word_cycles"], names)
    for position, packet in enumerate(packets):
        measured = packet["offered_cycle"] - bench.recorder.frame_starts[position]
        if packet["words"][class_word + 1] != measured:
            failures.append(f"packet {position}: cycle word {packet['words'][class_word + 1]}, "
                            f"measured {measured}")
    assert not failures, _failure_report(failures)
    assert await bench.read("IMAGES") == len(sent)


@cocotb.test()
async def batches(dut: Any) -> None:
    """Check BATCH: B frames in one input transfer answer as B packets in one output transfer.

    TLAST comes only on the transfer's last frame and on its packet's last word; a short
    last transfer (TLAST on an earlier frame's end) is good; a transfer longer than B
    frames drops its B-th frame with the rest of the transfer.
    """
    config = load_config()
    bench = Bench(dut, config)
    await bench.reset()
    await bench.write_masks()
    frames, expected = config["frames"], config["expected"]
    bench.recorder.frame_words = len(frames[0])
    class_word = config["num_classes"]
    await bench.write("BATCH", 3)
    assert await bench.read("BATCH") == 3, "BATCH does not read back"
    # a full batch of 3, then a short one of 2, then a full one again
    transfers = [[0, 1, 2], [3, 4], [5, 0, 1]]
    for transfer in transfers:
        await bench.source.send(AxiStreamFrame(sum((frames[i] for i in transfer), [])))
    order = [i for transfer in transfers for i in transfer]
    packets = await bench.wait_packets(len(order))
    ends = {sum(len(t) for t in transfers[:k + 1]) - 1 for k in range(len(transfers))}
    # every word and cycle word, the packets in the order their frames were sent
    bench.config = {**config, "expected": [expected[image] for image in order]}
    failures = bench.check_packets(packets)
    for position, packet in enumerate(packets):
        wanted = [0] * (config["packet_words"] - 1) + [int(position in ends)]
        if packet["tlast"] != wanted:
            failures.append(f"packet {position}: TLAST {packet['tlast']}, expected {wanted}")
    assert not failures, _failure_report(failures)
    assert not await bench.read("STATUS") & STATUS_FRAME_ERROR, "a good batch set frame_error"
    # a transfer of 3 frames with BATCH 2: frame 1 lacks TLAST, so it and frame 2 are dropped
    await bench.write("BATCH", 2)
    before = len(bench.recorder.packets)
    await bench.source.send(AxiStreamFrame(frames[0] + frames[1] + frames[2]))
    packets = (await bench.wait_packets(before + 2))[before:]
    assert packets[0]["words"][class_word] == expected[0][class_word], "frame 0 of the batch"
    assert packets[0]["tlast"][-1] == 0, "the first packet of a batch of 2 ended the transfer"
    assert packets[1]["words"][class_word] == ERROR_CLASS, (
        f"overlong batch: class {packets[1]['words'][class_word]:#x}, expected the error class")
    assert packets[1]["tlast"][-1] == 1, "the error packet did not end the transfer"
    assert await bench.read("STATUS") & STATUS_FRAME_ERROR, "an overlong batch is not flagged"
    await bench.write("CONTROL", CONTROL_CLEAR_ERROR)
    # BATCH 0 is one frame per transfer again
    await bench.write("BATCH", 0)
    bench.recorder.frame_words = None
    bench.config = {**config, "frames": frames[:2], "expected": expected[:2]}
    bench.recorder.clear()
    failures = await bench.run_frames()
    assert not failures, "BATCH 0 after the batches: " + _failure_report(failures)
    assert all(packet["tlast"][-1] for packet in bench.recorder.packets)


@cocotb.test()
async def reset_mid_image(dut: Any) -> None:
    """Check that a reset in the middle of a frame, or of a computation, leaves no trace."""
    config = load_config()
    bench = Bench(dut, config)
    await bench.reset()
    first = config["frames"][0]
    await bench.send(first)
    while not bench.recorder.frame_starts:
        await RisingEdge(dut.aclk)
    await ClockCycles(dut.aclk, len(first) // 2)  # cut the frame before its TLAST
    await bench.reset()
    await bench.write_masks()
    await bench.send(first)
    await ClockCycles(dut.aclk, len(first) + 4)  # the core is busy with it now
    await bench.reset()
    await bench.write_masks()
    failures = await bench.run_frames()
    assert not failures, "after resets: " + _failure_report(failures)


@cocotb.test()
async def ddr_weights(dut: Any) -> None:
    """Load a weight image from a simulated DDR, check its checksum, then stream the images.

    The frames are queued before the load starts: they must wait (``s_axis_tready`` low)
    until it completes. Writes the packets, the checksum read, ``STATUS``, the load's
    cycles (from the first read request to ``s_axis_tready`` rising) and the memory's
    counters to the results; fails on a mismatch, a wrong checksum or a bus violation.
    """
    config = load_config()
    figures = config["ddr"]
    bench = Bench(dut, config)
    image = bytes.fromhex(figures["image"])
    address = figures["address"]
    activations = figures.get("activations")
    end = address + len(image)
    if activations is not None:  # the stream in DDR: random bytes until written
        end = max(end, activations["address"] + activations["bytes"])
    memory = np.random.default_rng(7).integers(0, 256, end, dtype=np.uint8)
    memory[address:address + len(image)] = np.frombuffer(image, dtype=np.uint8)
    if figures.get("flip") is not None:
        memory[address + figures["flip"]] ^= 0xFF
    board = load_board(figures["board"])
    ddr = AxiReadMemory.from_board(board, dut, dut.aclk, memory)
    cocotb.start_soon(ddr.run())
    writes = None
    if activations is not None:  # the write port on the same bytes
        # (the stem's maps in DDR are written a chunk of a position at a time: strobed)
        writes = AxiWriteMemory.from_board(board, dut, dut.aclk, ddr.memory,
                                           strobes=bool(activations.get("strobes")))
        cocotb.start_soon(writes.run())
    await bench.reset()
    marks: dict[str, int] = {}

    async def watch() -> None:
        while "ready" not in marks:
            await RisingEdge(dut.aclk)
            if "request" not in marks and int(dut.m_axi_arvalid.value):
                marks["request"] = bench.recorder.cycle
            if "request" in marks and int(dut.s_axis_tready.value):
                marks["ready"] = bench.recorder.cycle

    assert not int(dut.s_axis_tready.value), "s_axis_tready is high before any load"
    every_step = (1 << config["registers"]["T_MAX"]) - 1
    failures = [f"MASK{index} after reset: {value:#x}, not every step ({every_step:#x})"
                for index in range(len(config["trained_masks"]))
                if (value := await bench.read(f"MASK{index}")) != every_step]
    await bench.write("WEIGHTS_ADDR", address)
    if activations is not None:
        await bench.write("ACTIVATIONS_ADDR", activations["address"])
    late = bool(figures.get("late_masks"))
    frames = config["frames"]
    if not late:
        await bench.write_masks()
        for frame in frames:  # queued now: they must wait for the load
            await bench.send(frame)
    cocotb.start_soon(watch())
    await bench.write("CONTROL", CONTROL_LOAD_WEIGHTS)
    limit = LOAD_CYCLES_PER_BEAT * len(image) // ddr.beat_bytes + LOAD_CYCLES_SLACK
    started, status = bench.recorder.cycle, 0
    while not status & (STATUS_WEIGHTS_LOADED | STATUS_WEIGHTS_ERROR):
        status = await bench.read("STATUS")
        if bench.recorder.cycle - started > limit:
            raise AssertionError(f"no load after {limit} cycles (STATUS {status:#x}, "
                                 f"{ddr.counters.beats} beats served)")
    if figures.get("flip_after_load") is not None:
        ddr.memory[address + figures["flip_after_load"]] ^= 0xFF
    if late:  # the masks change after the load, once tiles have been fetched ahead
        await bench.write_masks()
        for frame in frames:
            await bench.send(frame)
    checksum = (await bench.read("WEIGHTS_CHECKSUM_HI")) << 32 | \
        await bench.read("WEIGHTS_CHECKSUM_LO")
    if checksum != figures["checksum"]:
        failures.append(f"WEIGHTS_CHECKSUM {checksum:016x}, the image's "
                        f"{figures['checksum']:016x}")
    failures += [f"DDR: {violation}" for violation in ddr.violations]
    failures += [f"DDR writes: {violation}"
                 for violation in (writes.violations if writes is not None else [])]
    for name, value in config["registers"].items():
        got = await bench.read(name)
        if got != value:
            failures.append(f"register {name}: read {got:#x}, expected {value:#x}")
    packets = await bench.wait_packets(len(frames))
    failures += bench.check_packets(packets)
    for packet, start in zip(packets, bench.recorder.frame_starts):
        packet["first_word_cycle"] = start
    counters = ddr.counters
    weight_stalls = await bench.read("WEIGHT_STALLS")
    stem_weight_stalls = await bench.read("STEM_WEIGHT_STALLS")
    stream = {}
    if writes is not None:
        status = await bench.read("STATUS")
        if status & STATUS_STREAM_ERROR:
            failures.append(f"STATUS {status:#x}: the stream's DDR traffic failed")
        stream = {"stream_stalls": await bench.read("STREAM_STALLS"),
                  "stem_map_stalls": await bench.read("STEM_MAP_STALLS"),
                  "written_beats": writes.counters.beats}
    Path(config["results"]).write_text(json.dumps({
        **stream,
        "weight_stalls": weight_stalls, "stem_weight_stalls": stem_weight_stalls,
        "packets": packets, "failures": failures, "checksum": checksum, "status": status,
        "load_cycles": marks.get("ready", 0) - marks.get("request", 0),
        "beats": counters.beats, "bursts": counters.bursts,
        "latency_stall_cycles": counters.latency_stall_cycles,
        "bandwidth_stall_cycles": counters.bandwidth_stall_cycles}))
    assert not failures, _failure_report(failures)
