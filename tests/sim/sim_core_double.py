"""A test double of the compute core, for testing the AXI top alone (never used by the product).

It has the real core's signature and protocol (load reads the image buffer through
``img_addr``/``img_data`` with its one-cycle latency, then loaded; start, a data-dependent
run time, done; a load may overlap the run before it) and
computes a simple function of the image and the masks that :func:`double_results`
reproduces in Python:

- ``pixel_sum`` = sum of all pixels,
- ``logits[k] = pixel_sum - 37 * k`` (wrapped to the logit width),
- ``predicted = pixel_sum mod 256``,
- ``spike_counts[i] = pixel_sum + (masks[i mod modules] << 16)``,
- the run time after start is ``2 * words + pixel_sum mod 8`` cycles: longer than the
  next frame takes to stream in, so images overlap as they do with the real core.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring

from stepvit.model.export import Export
from stepvit.rtl.interface import core_signature, image_words


class CoreDouble(wiring.Component):
    def __init__(self, export: Export, *, lanes: int) -> None:
        self._words = image_words(export)
        self._modules = len(export.module_names)
        super().__init__(core_signature(export))

    def elaborate(self, platform: object) -> Module:
        m = Module()
        loaded_sum = Signal(32)  # the image loaded last (the real core's second bank)
        pixel_sum = Signal(32)
        masks = Signal.like(self.masks)
        delay = Signal(range(2 * self._words + 8))
        m.d.sync += [self.done.eq(0), self.loaded.eq(0)]
        with m.FSM(name="load"):
            with m.State("IDLE"):
                with m.If(self.load):
                    m.d.sync += [loaded_sum.eq(0), self.img_addr.eq(0)]
                    m.next = "READ"
            with m.State("READ"):
                # img_data is the word at the previous cycle's address: one word of latency.
                m.d.sync += self.img_addr.eq(self.img_addr + 1)
                with m.If(self.img_addr == self._words - 1):
                    m.next = "LAST"
                with m.If(self.img_addr != 0):
                    m.d.sync += loaded_sum.eq(loaded_sum + sum(self.img_data.word_select(b, 8)
                                                               for b in range(4)))
            with m.State("LAST"):
                m.d.sync += [loaded_sum.eq(loaded_sum + sum(self.img_data.word_select(b, 8)
                                                            for b in range(4))),
                             self.loaded.eq(1)]
                m.next = "IDLE"
        with m.FSM(name="compute"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pixel_sum.eq(loaded_sum),
                                 delay.eq(2 * self._words + loaded_sum[:3]),
                                 masks.eq(self.masks), self.busy.eq(1)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.sync += delay.eq(delay - 1)
                with m.If(delay == 0):
                    m.d.sync += self.done.eq(1)
                    for index in range(len(self.logits)):
                        m.d.sync += self.logits[index].eq(pixel_sum - 37 * index)
                    for index in range(len(self.spike_counts)):
                        m.d.sync += self.spike_counts[index].eq(
                            pixel_sum + (masks[index % self._modules] << 16))
                    m.d.sync += [self.predicted.eq(pixel_sum[:8]), self.busy.eq(0)]
                    m.next = "IDLE"
        return m


def double_results(export: Export, images: np.ndarray, masks: np.ndarray) -> dict:
    """Return what :class:`CoreDouble` computes for ``images`` uint8 [B,C,H,W] and mask rows."""
    mask_values = [sum(int(bit) << step for step, bit in enumerate(row)) for row in masks]
    pixel_sums = images.reshape(len(images), -1).astype(np.int64).sum(axis=1)
    classes = export.arch["num_classes"]
    layers = len(export.layer_names())
    logits = pixel_sums[:, None] - 37 * np.arange(classes)[None, :]
    half = 1 << (export.bit_widths["logit"] - 1)
    logits = (logits + half) % (2 * half) - half
    spikes = np.array([[s + (mask_values[i % len(mask_values)] << 16) for i in range(layers)]
                       for s in pixel_sums])
    return {"logits": logits, "predicted": pixel_sums % 256, "spike_totals": spikes}
