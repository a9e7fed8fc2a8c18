"""The frame receiver (``rtl/frame.py``) against the frame rules of ``rtl/PROTOCOL.md``.

Frames are made by :func:`~stepvit.rtl.protocol.pack_images` and streamed into the
receiver in Amaranth's simulator; each test lists the frame ends the protocol gives (the
word of the stream, whether the frame ended its transfer, whether it was dropped) and
checks the image buffer against the last good frame.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from stepvit.rtl.frame import FrameReceiver
from stepvit.rtl.protocol import image_words, pack_images, unpack_images

#: A frame of 16 pixels (4 words) and one of 75 (19 words, the last zero-padded).
SHAPES = [(1, 4, 4), (3, 5, 5)]


def frames_of(shape: tuple[int, ...], count: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Return ``count`` random images of ``shape`` and their frames."""
    images = np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)
    return images, pack_images(images)


def transfer(*frames: np.ndarray, extra: int = 0, tlast: bool = True) -> list[tuple[int, int]]:
    """The (word, TLAST) of one input transfer: ``frames`` back to back, ``extra`` words more,
    TLAST on the very last word unless ``tlast`` is false."""
    words = [int(word) for frame in frames for word in frame] + [0x5A5A5A5A] * extra
    return [(word, int(tlast and index == len(words) - 1)) for index, word in enumerate(words)]


def receive(shape: tuple[int, ...], stream: list[tuple[int, int]], *, batch: int = 0,
            idle_every: int = 0, disabled_cycles: int = 0) -> dict:
    """Stream ``(word, TLAST)`` pairs into a receiver for frames of ``shape``.

    ``idle_every`` drops ``valid`` every that many cycles; the receiver is not enabled for
    the first ``disabled_cycles``. Returns the frame ends ``(word, ended transfer,
    dropped)``, the words where a frame started, the words taken while disabled, and the
    image buffer.
    """
    words = image_words(shape)
    dut = FrameReceiver(image_words=words)
    result: dict = {"ends": [], "starts": [], "taken_while_disabled": 0}

    async def testbench(ctx):
        ctx.set(dut.batch, batch)
        position, cycle = 0, 0
        while position < len(stream):
            enabled = cycle >= disabled_cycles
            valid = not (idle_every and cycle % idle_every == idle_every - 1)
            ctx.set(dut.enable, enabled)
            ctx.set(dut.words.valid, valid)
            ctx.set(dut.words.payload.data, stream[position][0])
            ctx.set(dut.words.payload.last, stream[position][1])
            if valid and ctx.get(dut.words.ready):
                result["taken_while_disabled"] += not enabled
                if ctx.get(dut.first_word):
                    result["starts"].append(position)
                if ctx.get(dut.frame_done):
                    result["ends"].append((position, ctx.get(dut.frame_last),
                                           ctx.get(dut.frame_error)))
                position += 1
            await ctx.tick()
            cycle += 1
        ctx.set(dut.words.valid, 0)
        buffer = []
        for address in range(words):
            ctx.set(dut.read_addr, address)
            await ctx.tick()
            buffer.append(ctx.get(dut.read_data))
        result["buffer"] = np.array([buffer], dtype=np.uint32)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return result


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("batch", [0, 1])
def test_frames_with_tlast_each_end_their_transfer(shape, batch) -> None:
    images, frames = frames_of(shape, 3)
    words = image_words(shape)
    got = receive(shape, [pair for frame in frames for pair in transfer(frame)], batch=batch,
                  idle_every=3)
    assert got["ends"] == [(words * k - 1, 1, 0) for k in (1, 2, 3)]
    assert got["starts"] == [0, words, 2 * words]
    np.testing.assert_array_equal(unpack_images(got["buffer"], shape)[0], images[-1])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_a_batch_is_its_frames_without_tlast_then_one_with(shape) -> None:
    images, frames = frames_of(shape, 3, seed=1)
    words = image_words(shape)
    got = receive(shape, transfer(*frames), batch=3)
    assert got["ends"] == [(words - 1, 0, 0), (2 * words - 1, 0, 0), (3 * words - 1, 1, 0)]
    assert got["starts"] == [0, words, 2 * words]
    np.testing.assert_array_equal(unpack_images(got["buffer"], shape)[0], images[-1])


def test_a_short_last_batch_is_good_and_the_next_batch_starts_afresh() -> None:
    shape = SHAPES[0]
    images, frames = frames_of(shape, 5, seed=2)
    words = image_words(shape)
    got = receive(shape, transfer(*frames[:2]) + transfer(*frames[2:]), batch=3)
    assert got["ends"] == [(words * k - 1, int(k in (2, 5)), 0) for k in range(1, 6)]
    np.testing.assert_array_equal(unpack_images(got["buffer"], shape)[0], images[-1])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_a_frame_whose_tlast_comes_early_is_dropped_there(shape) -> None:
    images, frames = frames_of(shape, 2, seed=3)
    words = image_words(shape)
    short = frames[0][: words - 1]
    got = receive(shape, transfer(short) + transfer(frames[1]))
    assert got["ends"] == [(words - 2, 1, 1), (2 * words - 2, 1, 0)]
    assert got["starts"] == [0, words - 1]
    np.testing.assert_array_equal(unpack_images(got["buffer"], shape)[0], images[1])


@pytest.mark.parametrize("batch", [0, 2])
def test_a_frame_without_tlast_on_its_last_word_is_consumed_up_to_tlast(batch) -> None:
    """A long frame (one a transfer), or a batch's last frame without TLAST: one drop."""
    shape = SHAPES[1]
    images, frames = frames_of(shape, 3, seed=4)
    words = image_words(shape)
    batch_frames = max(batch, 1)
    first = transfer(*frames[:batch_frames], extra=2)
    got = receive(shape, first + transfer(frames[2]), batch=batch)
    ends = [(words * k - 1, 0, 0) for k in range(1, batch_frames)]
    long_end = batch_frames * words + 1
    assert got["ends"] == [*ends, (long_end, 1, 1), (long_end + words, 1, 0)]
    assert got["starts"] == [words * k for k in range(batch_frames)] + [long_end + 1]
    np.testing.assert_array_equal(unpack_images(got["buffer"], shape)[0], images[2])


def test_no_word_is_taken_while_disabled() -> None:
    shape = SHAPES[0]
    images, frames = frames_of(shape, 1, seed=5)
    got = receive(shape, transfer(frames[0]), disabled_cycles=5)
    assert got["taken_while_disabled"] == 0
    assert got["ends"] == [(image_words(shape) - 1, 1, 0)]
    np.testing.assert_array_equal(unpack_images(got["buffer"], shape)[0], images[0])

