"""Copy one image from the top's image buffer into the stem engine's pixel bank.

The image arrives in ``[C, H, W]`` raster order, four pixels a 32-bit word
(rtl/PROTOCOL.md); the stem engine keeps one word per position with channel ``c`` in byte
``c`` (:class:`~stepvit.rtl.stem_engine.StemEngine`). One pixel a cycle: a position counter
that wraps at ``H·W`` and a channel counter give each pixel its word and byte, so no address
is ever multiplied or divided.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from stepvit.rtl.patch_loader import image_buffer_members


class StemPixelLoader(wiring.Component):
    """Write the pixels of one image, one a cycle, as byte writes of position words.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``.

    Members
    -------
    start, done, img_addr, img_data
        The image buffer's side, as :class:`~stepvit.rtl.patch_loader.PatchLoader`'s.
    pixel_valid : Out(C)
        One-hot: the channel (byte) written this cycle (none when idle).
    pixel_address : Out(range(H·W))
        The position written.
    pixel_data : Out(8·C)
        The pixel, repeated in every byte.
    """

    def __init__(self, *, image_shape: tuple[int, int, int]) -> None:
        self._shape = tuple(int(size) for size in image_shape)
        channels, height, width = self._shape
        pixels = channels * height * width
        super().__init__({
            **image_buffer_members(pixels),
            "pixel_valid": Out(channels),
            "pixel_address": Out(range(max(height * width, 2))),
            "pixel_data": Out(8 * channels),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the raster, position and channel counters and the one-cycle-late write."""
        m = Module()
        channels, height, width = self._shape
        pixels, positions = channels * height * width, height * width
        raster = Signal(range(pixels + 1))
        position = Signal(range(max(positions, 2)))
        channel = Signal(range(max(channels, 2)))
        reading, write_valid, write_last = Signal(), Signal(), Signal()
        write_channel = Signal.like(channel)
        write_byte = Signal(2)
        m.d.comb += self.img_addr.eq(raster >> 2)

        m.d.sync += [write_valid.eq(0), write_last.eq(0)]
        with m.If(write_valid):
            pixel = self.img_data.word_select(write_byte, 8)
            m.d.comb += [
                self.pixel_data.eq(Cat(*([pixel] * channels))),
                self.pixel_valid.eq(1 << write_channel),
                self.done.eq(write_last),
            ]

        with m.If(self.start):
            m.d.sync += [reading.eq(1), raster.eq(0), position.eq(0), channel.eq(0)]
        with m.Elif(reading):
            m.d.sync += [
                write_valid.eq(1), write_last.eq(raster == pixels - 1),
                self.pixel_address.eq(position), write_channel.eq(channel),
                write_byte.eq(raster[:2]), raster.eq(raster + 1), position.eq(position + 1),
            ]
            with m.If(raster == pixels - 1):
                m.d.sync += reading.eq(0)
            with m.If(position == positions - 1):
                m.d.sync += [position.eq(0), channel.eq(channel + 1)]
        return m


__all__ = ["StemPixelLoader"]
