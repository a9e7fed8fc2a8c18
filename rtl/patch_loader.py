"""Copy one image from the top's image buffer into patch words: the embedding's bit planes.

The image arrives in raster order, four pixels a 32-bit word (rtl/PROTOCOL.md); the
embedding wants, per token, its ``C·p·p`` pixels in ``(c, ky, kx)`` order (SPEC.md
section 1). One pixel a cycle: counters follow the raster and give each pixel its token
and its place in the patch, so no address is ever multiplied.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


def image_buffer_members(pixels: int) -> dict[str, In | Out]:
    """Return a loader's members on the image buffer's side, for images of ``pixels`` bytes."""
    return {
        "start": In(1),
        "done": Out(1),
        "img_addr": Out(range(max(-(-pixels // 4), 2))),
        "img_data": In(32),
    }


class PatchLoader(wiring.Component):
    """Write the patches of one image, one pixel a cycle, as byte writes of patch words.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``.
    patch : int
        Patch side ``p``; divides ``H`` and ``W``.

    Members
    -------
    start : In(1)
        Begin reading the image at word 0.
    done : Out(1)
        One-cycle pulse with the last pixel's write.
    img_addr : Out(range(words))
        Image buffer word address.
    img_data : In(32)
        The word at the previous cycle's ``img_addr``.
    patch_addr : Out(range(tokens))
        Token whose patch word is written.
    patch_data : Out(8 * patch_len)
        The pixel, repeated in every byte of the patch word.
    patch_enable : Out(patch_len)
        One-hot: the byte of the pixel within the patch word (none when idle).
    """

    def __init__(self, *, image_shape: tuple[int, int, int], patch: int) -> None:
        channels, height, width = image_shape
        if not isinstance(patch, int) or patch < 1 or height % patch or width % patch:
            raise ValueError(f"patch must be a positive integer dividing {height}x{width}, "
                             f"not {patch!r}")
        self._shape = (channels, height, width)
        self._patch = patch
        self._tokens = (height // patch) * (width // patch)
        self._patch_len = channels * patch * patch
        pixels = channels * height * width
        super().__init__({
            **image_buffer_members(pixels),
            "patch_addr": Out(range(max(self._tokens, 2))),
            "patch_data": Out(8 * self._patch_len),
            "patch_enable": Out(self._patch_len),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the raster counters and the one-cycle-late byte write."""
        m = Module()
        channels, height, width = self._shape
        p = self._patch
        pixels = channels * height * width
        raster = Signal(range(pixels + 1))
        pixel_x, pixel_y = Signal(range(max(p, 2))), Signal(range(max(p, 2)))
        patch_col, patch_row = Signal(range(width // p + 1)), Signal(range(height // p + 1))
        token_row = Signal(range(self._tokens + 1))
        index_channel = Signal(range(self._patch_len + 1))
        index_row = Signal(range(self._patch_len + 1))
        reading = Signal()
        write_valid = Signal()
        write_last = Signal()
        write_index = Signal(range(max(self._patch_len, 2)))
        write_byte = Signal(2)
        m.d.comb += self.img_addr.eq(raster >> 2)

        m.d.sync += [write_valid.eq(0), write_last.eq(0)]
        with m.If(write_valid):
            pixel = Signal(8)
            with m.Switch(write_byte):
                for byte in range(4):
                    with m.Case(byte):
                        m.d.comb += pixel.eq(self.img_data[8 * byte:8 * byte + 8])
            m.d.comb += [
                self.patch_data.eq(Cat(*([pixel] * self._patch_len))),
                self.patch_enable.eq(1 << write_index),
                self.done.eq(write_last),
            ]

        with m.If(self.start):
            m.d.sync += [
                reading.eq(1), raster.eq(0), pixel_x.eq(0), pixel_y.eq(0), patch_col.eq(0),
                patch_row.eq(0), token_row.eq(0), index_channel.eq(0), index_row.eq(0),
            ]
        with m.Elif(reading):
            m.d.sync += [
                write_valid.eq(1), write_last.eq(raster == pixels - 1),
                self.patch_addr.eq(token_row + patch_col),
                write_index.eq(index_channel + index_row + pixel_x), write_byte.eq(raster[:2]),
                raster.eq(raster + 1), pixel_x.eq(pixel_x + 1),
            ]
            with m.If(raster == pixels - 1):
                m.d.sync += reading.eq(0)
            with m.If(pixel_x == p - 1):
                m.d.sync += [pixel_x.eq(0), patch_col.eq(patch_col + 1)]
                with m.If(patch_col == width // p - 1):
                    m.d.sync += [patch_col.eq(0), pixel_y.eq(pixel_y + 1),
                                 index_row.eq(index_row + p)]
                    with m.If(pixel_y == p - 1):
                        m.d.sync += [pixel_y.eq(0), index_row.eq(0),
                                     patch_row.eq(patch_row + 1),
                                     token_row.eq(token_row + width // p)]
                        with m.If(patch_row == height // p - 1):
                            m.d.sync += [patch_row.eq(0), token_row.eq(0),
                                         index_channel.eq(index_channel + p * p)]
        return m
