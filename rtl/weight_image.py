"""The weight image: a design's parameter memories laid out in one DDR buffer.

The host writes an export's *weight image* into DDR once per model; the accelerator's
:class:`~stepvit.rtl.weight_loader.WeightLoader` reads it over AXI into the memories that
hold the weights, biases, thresholds and spike values, and computes the image's checksum as
the beats arrive, which the host compares with :func:`image_checksum` (docs/ddr-dataflow.md,
"The weight image and its loader"). This module imports numpy and the standard library
only, so the host on a board packs and checks an image without the hardware's tools.

The layout, for a list of memories and an AXI data width (bits of a beat):

- the memories' regions in the list's order, each right after the one before (no gap);
- a memory's word takes ``ceil(width / data_width)`` whole beats, little-endian: the word's
  low bits in the first beat's low bytes, the bits above ``width`` zero;
- word ``i`` of a memory at ``offset + i * beats_per_word * data_width / 8``; words past the
  contents given (up to the memory's depth) are zero.

Every region therefore starts on a beat boundary, and no further: a 4 KB alignment would
buy the loader nothing (its bursts are cut at 4 KB wherever a region starts) and would
leave holes between regions that the checksum would have to skip or count. Back to back,
the image is one run of beats, read in one stream whose requests run ahead across the
memories, and its checksum covers every byte the loader reads: the image, whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The AXI data widths (bits of a beat) an image may be laid out for.
AXI_WIDTHS = (32, 64, 128, 256, 512, 1024)
#: Bits of the words the checksum sums, and the modulus of its two sums.
CHECKSUM_WORD_BITS = 32
#: The mask of one checksum sum (the sums wrap modulo 2**32, as the hardware's adders do).
CHECKSUM_MASK = (1 << CHECKSUM_WORD_BITS) - 1


@dataclass(frozen=True)
class ImageMemory:
    """One parameter memory of a design, as the image holds it.

    Attributes
    ----------
    name : str
        The memory's name (a Python identifier: the loader names its write port by it).
    width : int
        Bits of a word (at least 1).
    depth : int
        Words the memory holds (at least 1).
    """

    name: str
    width: int
    depth: int

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name.startswith("_"):
            raise ValueError(f"memory name {self.name!r} must be a Python identifier "
                             f"not starting with '_'")
        if self.width < 1:
            raise ValueError(f"memory {self.name}: width must be at least 1 bit, "
                             f"not {self.width}")
        if self.depth < 1:
            raise ValueError(f"memory {self.name}: depth must be at least 1 word, "
                             f"not {self.depth}")


@dataclass(frozen=True)
class Region:
    """Where one memory's words lie in the image.

    Attributes
    ----------
    memory : ImageMemory
    offset : int
        Byte of the image where its word 0 starts (a multiple of the beat's bytes).
    beats_per_word : int
        Beats one word takes (``ceil(width / data_width)``).
    word_bytes : int
        Bytes one word takes in the image (its beats').
    size : int
        Bytes of the region (``depth * word_bytes``).
    """

    memory: ImageMemory
    offset: int
    beats_per_word: int
    word_bytes: int
    size: int


@dataclass(frozen=True)
class ImageLayout:
    """The image of a list of memories at one AXI data width.

    Attributes
    ----------
    data_width : int
        Bits of an AXI beat.
    regions : tuple of Region
        One per memory, in the list's order, back to back.
    total_bytes : int
        Bytes of the image (a whole number of beats).
    """

    data_width: int
    regions: tuple[Region, ...]
    total_bytes: int

    @property
    def beat_bytes(self) -> int:
        """Bytes of one beat."""
        return self.data_width // 8

    @property
    def total_beats(self) -> int:
        """Beats of the whole image: what a loader reads."""
        return self.total_bytes // self.beat_bytes


def check_memories(memories: Sequence[ImageMemory]) -> None:
    """Refuse an empty list or two memories of one name.

    Raises
    ------
    ValueError
        Naming the problem.
    """
    if not memories:
        raise ValueError("an image needs at least one memory")
    names = [memory.name for memory in memories]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"memory names must be unique: {', '.join(repeated)} repeated")


def image_layout(memories: Sequence[ImageMemory], data_width: int) -> ImageLayout:
    """Lay out ``memories`` for beats of ``data_width`` bits.

    Parameters
    ----------
    memories : sequence of ImageMemory
        The memories, in the order the image holds them (and the loader fills them).
    data_width : int
        Bits of an AXI beat, one of :data:`AXI_WIDTHS`.

    Returns
    -------
    ImageLayout
        Each memory's offset and beats per word, and the image's total bytes.

    Raises
    ------
    ValueError
        On a data width AXI does not have, no memory or a repeated name.
    """
    if data_width not in AXI_WIDTHS:
        raise ValueError(f"data_width must be an AXI width ({AXI_WIDTHS[0]}-{AXI_WIDTHS[-1]} "
                         f"bits), not {data_width}")
    check_memories(memories)
    beat_bytes = data_width // 8
    regions, offset = [], 0
    for memory in memories:
        beats = -(-memory.width // data_width)
        word_bytes = beats * beat_bytes
        regions.append(Region(memory=memory, offset=offset, beats_per_word=beats,
                              word_bytes=word_bytes, size=memory.depth * word_bytes))
        offset += memory.depth * word_bytes
    return ImageLayout(data_width=data_width, regions=tuple(regions), total_bytes=offset)


def pack_image(memories: Sequence[ImageMemory], contents: Sequence[Sequence[int]],
               data_width: int) -> bytes:
    """Pack ``contents`` into the image of ``memories`` (the layout of :func:`image_layout`).

    Parameters
    ----------
    memories : sequence of ImageMemory
        The memories, in the image's order.
    contents : sequence of sequences of int
        Per memory, its words from word 0: each ``0 <= value < 2**width``, at most ``depth``
        of them; the words after the last given are zero.
    data_width : int
        Bits of an AXI beat.

    Returns
    -------
    bytes
        ``image_layout(memories, data_width).total_bytes`` bytes.

    Raises
    ------
    ValueError
        When ``contents`` does not have one entry per memory, a memory is given more words
        than its depth, or a value does not fit its memory's width (or is negative).
    """
    layout = image_layout(memories, data_width)
    if len(contents) != len(memories):
        raise ValueError(f"contents has {len(contents)} entries for {len(memories)} memories "
                         f"(one list of words per memory)")
    image = bytearray(layout.total_bytes)
    for region, words in zip(layout.regions, contents):
        memory = region.memory
        if len(words) > memory.depth:
            raise ValueError(f"memory {memory.name}: {len(words)} words given, more than its "
                             f"depth of {memory.depth}")
        for index, word in enumerate(words):
            value = int(word)
            if not 0 <= value < 1 << memory.width:
                raise ValueError(f"memory {memory.name}: word {index} is {value}, outside "
                                 f"0 .. 2**{memory.width} - 1 (its width)")
            start = region.offset + index * region.word_bytes
            image[start:start + region.word_bytes] = value.to_bytes(region.word_bytes, "little")
    return bytes(image)


def unpack_image(memories: Sequence[ImageMemory], image: bytes,
                 data_width: int) -> list[list[int]]:
    """Read every memory's words back from an image (each cut to its memory's width).

    Raises
    ------
    ValueError
        When ``image`` is not the layout's size.
    """
    layout = image_layout(memories, data_width)
    if len(image) != layout.total_bytes:
        raise ValueError(f"the image has {len(image)} bytes; the layout has "
                         f"{layout.total_bytes}")
    contents = []
    for region in layout.regions:
        mask = (1 << region.memory.width) - 1
        contents.append([
            int.from_bytes(image[start:start + region.word_bytes], "little") & mask
            for start in range(region.offset, region.offset + region.size, region.word_bytes)])
    return contents


def image_checksum(image: bytes) -> int:
    """Compute the checksum of an image, as the loader does over the beats it reads.

    The definition (a contract of the host and the hardware): split ``image`` into its
    ``N`` 32-bit little-endian words ``w[0], ..., w[N-1]`` (byte ``4i`` is the low byte of
    ``w[i]``); start from ``A = B = 0``; for ``i = 0 .. N-1`` in turn::

        A = (A + w[i]) mod 2**32
        B = (B + A) mod 2**32

    and return ``B << 32 | A`` (64 bits). So ``A`` is the words' sum and
    ``B = sum((N - i) * w[i]) mod 2**32``: a Fletcher-style pair, with adders only (the
    accelerator uses no multiplier). ``B`` weighs each word by its position, so swapping
    two different words ``i < j`` changes it by ``(j - i) * (w[i] - w[j])`` (mod 2**32),
    which is nonzero unless that product is a multiple of 2**32; a flipped bit always
    changes ``A``. Leading zero words leave both at zero, which a fixed layout makes
    harmless (the image's length is known). It is a check of a transfer, not a guard
    against a crafted image.

    Parameters
    ----------
    image : bytes
        A whole number of 32-bit words (every image is: a beat is at least 32 bits).

    Returns
    -------
    int
        ``B << 32 | A``.

    Raises
    ------
    ValueError
        When the length is not a multiple of 4 bytes.
    """
    word_bytes = CHECKSUM_WORD_BITS // 8
    if len(image) % word_bytes:
        raise ValueError(f"an image is a whole number of {CHECKSUM_WORD_BITS}-bit words; "
                         f"{len(image)} bytes is not")
    words = np.frombuffer(bytes(image), dtype="<u4").astype(np.uint64)
    count = len(words)
    # numpy's uint64 products and sums wrap modulo 2**64, a multiple of 2**32: the low 32
    # bits are those of the exact sums
    weights = np.arange(count, 0, -1, dtype=np.uint64)
    total_a = int(words.sum(dtype=np.uint64)) & CHECKSUM_MASK
    total_b = int((words * weights).sum(dtype=np.uint64)) & CHECKSUM_MASK
    return total_b << CHECKSUM_WORD_BITS | total_a


__all__ = ["AXI_WIDTHS", "CHECKSUM_MASK", "CHECKSUM_WORD_BITS", "ImageLayout", "ImageMemory",
           "Region", "check_memories", "image_checksum", "image_layout", "pack_image",
           "unpack_image"]
