"""The result packer (``rtl/packer.py``) against the packet layout of ``rtl/protocol.py``.

Each packet is streamed out of the packer in Amaranth's simulator, under a ready pattern,
and compared word for word with :func:`~stepvit.rtl.protocol.pack_results`: the logits
sign-extended, the class (``ERROR_CLASS`` for a dropped frame), the cycle word and the
spike counts, TLAST on the last word of a packet that ends its transfer.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from stepvit.rtl.packer import ResultPacker
from stepvit.rtl.protocol import ERROR_CLASS, pack_results, packet_words, unpack_results

CLASSES = 3
LOGIT_BITS = 10
LAYERS = 4
#: Every ready pattern the tests stream under: always, every other cycle, random stalls.
READY = {
    "always": [1],
    "every-other-cycle": [0, 1],
    "stalls": [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1],
}


def random_results(rng: np.random.Generator, images: int) -> tuple[np.ndarray, ...]:
    """Logits over the whole signed width (its extremes included), classes, cycles, counts."""
    low, high = -(2 ** (LOGIT_BITS - 1)), 2 ** (LOGIT_BITS - 1) - 1
    logits = rng.integers(low, high + 1, size=(images, CLASSES))
    logits[0, :2] = [low, high]
    predicted = rng.integers(0, CLASSES, size=images)
    cycles = rng.integers(0, 2**32, size=images, dtype=np.int64)
    spikes = rng.integers(0, 2**32, size=(images, LAYERS), dtype=np.int64)
    return logits, predicted, cycles, spikes


def stream(packets: list[dict], ready: list[int]) -> list[dict]:
    """Send each packet (``logits``, ``predicted``, ``cycles``, ``spikes``, ``error``,
    ``end``) through the packer, taking words when ``ready`` (cycled) says so.

    Returns, per packet, its accepted ``words``, their TLAST flags (``last``), the cycles of
    its ``sent`` pulse, whether a word changed while it was offered and not taken, and
    whether ``valid`` stayed high after the packet (``valid_after``).
    """
    dut = ResultPacker(num_classes=CLASSES, logit_bits=LOGIT_BITS, layers=LAYERS)
    received: list[dict] = []

    async def testbench(ctx):
        cycle = 0
        for packet in packets:
            for index in range(CLASSES):
                ctx.set(dut.logits[index], int(packet["logits"][index]))
            for layer in range(LAYERS):
                ctx.set(dut.spike_counts[layer], int(packet["spikes"][layer]))
            ctx.set(dut.predicted, int(packet["predicted"]))
            ctx.set(dut.cycles, int(packet["cycles"]))
            ctx.set(dut.error, packet["error"])
            ctx.set(dut.end, packet["end"])
            ctx.set(dut.send, 1)
            await ctx.tick()
            ctx.set(dut.send, 0)
            result = {"words": [], "last": [], "sent": [], "changed_while_stalled": False}
            offered = None
            while len(result["sent"]) == 0:
                take = ready[cycle % len(ready)]
                ctx.set(dut.words.ready, take)
                if ctx.get(dut.words.valid):
                    word = (ctx.get(dut.words.payload.data), ctx.get(dut.words.payload.last))
                    if offered is not None and word != offered:
                        result["changed_while_stalled"] = True
                    offered = None if take else word
                    if take:
                        result["words"].append(word[0])
                        result["last"].append(word[1])
                if ctx.get(dut.sent):
                    result["sent"].append(cycle)
                await ctx.tick()
                cycle += 1
            result["valid_after"] = ctx.get(dut.words.valid)
            received.append(result)
            ctx.set(dut.words.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run_until(1e-6 * 400 * len(packets))
    assert len(received) == len(packets), "a packet was never sent"
    return received


def as_packets(results: tuple[np.ndarray, ...], *, error: bool = False,
               ends: list[int] | None = None) -> list[dict]:
    logits, predicted, cycles, spikes = results
    ends = [1] * len(predicted) if ends is None else ends
    return [{"logits": logits[i], "predicted": predicted[i], "cycles": cycles[i],
             "spikes": spikes[i], "error": int(error), "end": ends[i]}
            for i in range(len(predicted))]


@pytest.mark.parametrize("ready", READY.values(), ids=READY.keys())
def test_packets_are_the_protocols_layout_under_backpressure(ready: list[int]) -> None:
    results = random_results(np.random.default_rng(len(ready)), 3)
    received = stream(as_packets(results), ready)
    expected = pack_results(*results)
    for image, packet in enumerate(received):
        assert len(packet["words"]) == packet_words(CLASSES, LAYERS)
        assert packet["words"] == expected[image].tolist(), f"packet {image}"
        assert not packet["changed_while_stalled"], f"packet {image}"
        assert packet["sent"] and len(packet["sent"]) == 1
        assert not packet["valid_after"]
    logits, _, _, _ = unpack_results(np.array([p["words"] for p in received]), CLASSES)
    np.testing.assert_array_equal(logits, results[0])  # sign-extended from LOGIT_BITS


def test_tlast_marks_the_last_word_of_a_packet_that_ends_its_transfer() -> None:
    results = random_results(np.random.default_rng(1), 3)
    ends = [0, 1, 0]
    received = stream(as_packets(results, ends=ends), READY["stalls"])
    words = packet_words(CLASSES, LAYERS)
    for image, packet in enumerate(received):
        assert packet["last"] == [0] * (words - 1) + [ends[image]], f"packet {image}"


def test_the_packet_of_a_dropped_frame_keeps_only_its_cycle_word() -> None:
    results = random_results(np.random.default_rng(2), 2)
    received = stream(as_packets(results, error=True, ends=[0, 1]), READY["every-other-cycle"])
    logits, predicted, cycles, spikes = results
    expected = pack_results(np.zeros_like(logits), np.full(2, ERROR_CLASS), cycles,
                            np.zeros_like(spikes))
    assert [packet["words"] for packet in received] == expected.tolist()
    _, classes, _, _ = unpack_results(expected, CLASSES)
    assert classes.tolist() == [-1, -1]
    assert received[1]["last"][-1] == 1


def test_a_packet_comparison_sees_one_wrong_word() -> None:
    results = random_results(np.random.default_rng(3), 1)
    expected = pack_results(*results)
    expected[0, CLASSES + 1] ^= 1
    assert stream(as_packets(results), READY["always"])[0]["words"] != expected[0].tolist()
