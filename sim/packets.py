"""Result packets of the accelerator (SPEC.md section 5): their words, parsing and checks.

Plain Python and numpy, so that the cocotb testbench, the runner and the command share
one definition of the formats and of what counts as a mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Class word of the packet of a dropped frame.
ERROR_CLASS = 0xFFFFFFFF


def word_names(num_classes: int, layer_names: Sequence[str]) -> list[str]:
    """Return a readable name for each word of a result packet."""
    return (
        [f"logit {k}" for k in range(num_classes)]
        + ["class", "cycles"]
        + [f"spike count {name}" for name in layer_names]
    )


def expected_packet(logits: Sequence[int], predicted: int, spike_totals: Sequence[int]) -> list:
    """Return the packet words the golden model predicts; the cycle word is ``None``."""
    return (
        [int(value) & 0xFFFFFFFF for value in logits]
        + [int(predicted), None]
        + [int(value) & 0xFFFFFFFF for value in spike_totals]
    )


def parse_packet(words: Sequence[int], num_classes: int) -> dict[str, Any]:
    """Return ``logits`` (signed), ``predicted``, ``cycles``, ``spike_totals`` of a packet."""
    logits = [int(np.int32(np.uint32(word))) for word in words[:num_classes]]
    predicted = int(words[num_classes])
    return {
        "logits": logits,
        "predicted": -1 if predicted == ERROR_CLASS else predicted,
        "cycles": int(words[num_classes + 1]),
        "spike_totals": [int(word) for word in words[num_classes + 2 :]],
    }


def packet_mismatches(
    image: int,
    expected: Sequence[int | None],
    words: Sequence[int],
    word_cycles: Sequence[int],
    names: Sequence[str],
) -> list[str]:
    """Return one message per word of a result packet that differs from ``expected``.

    Parameters
    ----------
    image : int
        Index of the image, for the messages.
    expected : sequence of int or None
        Expected words (``None``: not compared).
    words, word_cycles : sequence of int
        Received words and the simulation cycle at which each was accepted.
    names : sequence of str
        Name of each word (:func:`word_names`).
    """
    messages = []
    if len(words) != len(expected):
        messages.append(
            f"image {image}: packet of {len(words)} words, expected {len(expected)}"
        )
    for index, (want, got) in enumerate(zip(expected, words)):
        if want is not None and want != got:
            messages.append(
                f"image {image} word {index} ({names[index]}) at cycle {word_cycles[index]}: "
                f"got {got:#010x}, expected {want:#010x}"
            )
    return messages
