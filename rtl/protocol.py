"""The accelerator's protocol: registers, image frames, result packets (``PROTOCOL.md``).

One definition, numpy only, for the generator (``rtl/``), the simulation (``sim/``) and the
host and its board (``host/``):

- the AXI4-Lite register map (:data:`REGISTERS`, :func:`offset`) and the encoding of the
  time-step masks in the ``MASK<i>`` registers (:func:`mask_register_values`);
- the input frame: four pixels per little-endian 32-bit word (:func:`pack_images`, of a
  batch :func:`check_images` accepts);
- the result packet: ``K`` logits, the class (:data:`ERROR_CLASS` for a dropped frame),
  the cycles and one spike count per LIF layer (:func:`pack_results`,
  :func:`unpack_results`, :func:`packet_mismatches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepvit.model.export import Export
from stepvit.model.export.errors import StepvitError

#: Value of the ``ID`` register: ASCII ``SVIT``.
ACCEL_ID = 0x53564954


@dataclass(frozen=True)
class Register:
    """One 32-bit register.

    Attributes
    ----------
    name : str
        Name used by the host and the generator.
    offset : int
        Byte offset on the AXI4-Lite port.
    access : str
        ``"r"`` (read only) or ``"rw"``.
    doc : str
        What the register holds.
    """

    name: str
    offset: int
    access: str
    doc: str


#: Bits of the ``STATUS`` register.
STATUS_BUSY = 1 << 0
STATUS_FRAME_ERROR = 1 << 1

#: Bits of ``STATUS`` in a design that loads its parameters from DDR (``weights="ddr"``;
#: always 0 in a ``rom`` design): the last load completed without an error response (the
#: core takes frames only then); a beat of the last load came back with an error response;
#: a load is under way.
STATUS_WEIGHTS_LOADED = 1 << 2
STATUS_WEIGHTS_ERROR = 1 << 3
STATUS_WEIGHTS_LOADING = 1 << 4
#: A design whose stream is in DDR only: the last image's stream traffic went wrong (an AXI
#: error response on the activation buffer, or reads that disagree with the passes).
STATUS_STREAM_ERROR = 1 << 5

#: Bits of the ``CONTROL`` register.
CONTROL_CLEAR_ERROR = 1 << 0
#: ``weights="ddr"`` only: start loading the weight image at ``WEIGHTS_ADDR`` (ignored while
#: a load is under way; a ``rom`` design ignores it).
CONTROL_LOAD_WEIGHTS = 1 << 1

REGISTERS: tuple[Register, ...] = (
    Register("ID", 0x00, "r", "ACCEL_ID, 'SVIT'"),
    Register("CONFIG_HASH", 0x04, "r", "the export's config_hash (32 bits)"),
    Register("STATUS", 0x08, "r", "STATUS_BUSY | STATUS_FRAME_ERROR"),
    Register("CONTROL", 0x0C, "rw", "write CONTROL_CLEAR_ERROR to clear frame_error"),
    Register("CYCLES", 0x10, "r", "cycle count of the last image"),
    Register("IMAGES", 0x14, "r", "images processed since reset"),
    Register("T_MAX", 0x18, "r", "time steps of the design"),
    Register("NUM_MODULES", 0x1C, "r", "number of mask registers (2L + 2)"),
    Register("LANES", 0x20, "r", "parallel accumulator lanes"),
    Register("BATCH", 0x24, "rw", "frames per input transfer (0 or 1: one); its low 16 bits"),
    Register("BUSY_CYCLES", 0x3C, "r",
             "cycles with an image in flight (its first word in, its packet not yet all out) "
             "since reset (wraps at 2^32): over images streamed back to back, their cycles "
             "together"),
)

#: The registers a design that loads its parameters from DDR (``weights="ddr"``) adds, at
#: offsets no ``rom`` design uses (a ``rom`` design answers them with SLVERR). In such a
#: design ``CONFIG_HASH`` holds the export's *shape hash* (``shape_hash_of``), not its
#: config hash: the bitstream serves every export of that shape.
DDR_REGISTERS: tuple[Register, ...] = (
    Register("WEIGHTS_ADDR", 0x28, "rw",
             "byte address of the weight image in DDR (32 bits, a multiple of a beat)"),
    Register("WEIGHTS_CHECKSUM_LO", 0x2C, "r",
             "image_checksum of the last load's bytes, low 32 bits (A)"),
    Register("WEIGHTS_CHECKSUM_HI", 0x30, "r",
             "image_checksum of the last load's bytes, high 32 bits (B)"),
    Register("WEIGHT_STALLS", 0x34, "r",
             "cycles the core waited for a weight tile since reset (wraps; 0 in a design "
             "that keeps its weights on chip)"),
    Register("STEM_WEIGHT_STALLS", 0x38, "r",
             "cycles the stem waited for a tap tile since reset (wraps; 0 unless its taps "
             "stream); it overlaps the core's waits in time"),
)

#: The registers a design whose residual stream is in DDR (``stream_ddr``) adds, past the
#: mask registers' room.
STREAM_REGISTERS: tuple[Register, ...] = (
    Register("ACTIVATIONS_ADDR", 0x800, "rw",
             "byte address of the activation buffer in DDR (32 bits, a multiple of a beat; "
             "ACTIVATION_BYTES bytes the accelerator reads and writes while it computes)"),
    Register("ACTIVATION_BYTES", 0x804, "r",
             "bytes the activation buffer takes: the residual stream of every step (and "
             "the stem's maps, in a design that keeps them in DDR)"),
    Register("STREAM_STALLS", 0x808, "r",
             "cycles the core waited for the stream's reads or write room since reset "
             "(wraps)"),
    Register("STEM_MAP_STALLS", 0x80C, "r",
             "cycles the stem waited for its maps in DDR since reset (wraps; 0 unless "
             "they are in DDR); it overlaps the core's waits in time"),
)

#: Where a design keeps its parameters: ``rom`` (baked into the bitstream from one export)
#: or ``ddr`` (RAMs filled from a weight image in DDR: one bitstream per shape).
WEIGHT_MODES = ("rom", "ddr")


def registers_for(weights: str, stream_ddr: bool = False) -> tuple[Register, ...]:
    """Return the registers of a design whose parameters are ``weights`` (``rom``/``ddr``).

    ``stream_ddr``: the design keeps its residual stream in DDR (:data:`STREAM_REGISTERS`).

    Raises
    ------
    ValueError
        For a mode not in :data:`WEIGHT_MODES`.
    """
    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_MODES)}, not {weights!r}")
    return (REGISTERS + (DDR_REGISTERS if weights == "ddr" else ())
            + (STREAM_REGISTERS if stream_ddr else ()))


#: Bits of ``BATCH`` that count: a batch holds at most ``2**BATCH_BITS - 1`` frames.
BATCH_BITS = 16

#: Mask register of module ``i`` (SPEC.md module order) is at ``MASK_BASE + 4 * i``:
#: bit ``t`` enables time step ``t``. Reset value: the trained mask (``weights="ddr"``:
#: every step active; the host writes the export's mask).
MASK_BASE = 0x40


def offset(name: str) -> int:
    """Return the byte offset of the register called ``name``.

    Parameters
    ----------
    name : str
        A register name from :data:`REGISTERS`, :data:`DDR_REGISTERS` or
        :data:`STREAM_REGISTERS`, or ``MASK<i>``
        for module ``i``'s mask.

    Raises
    ------
    KeyError
        If no register has that name.
    """
    if name.startswith("MASK") and name[4:].isdigit():
        return MASK_BASE + 4 * int(name[4:])
    for register in REGISTERS + DDR_REGISTERS + STREAM_REGISTERS:
        if register.name == name:
            return register.offset
    raise KeyError(f"no accelerator register named {name!r}")


def mask_register_values(mask_rows: Sequence[Sequence[int]]) -> list[int]:
    """Return 0/1 mask rows ``[modules, T]`` as register values (bit t enables step t)."""
    return [sum(int(bit) << step for step, bit in enumerate(row)) for row in mask_rows]


# --- frames and packets -----------------------------------------------------------------

#: Class word of the result packet of a dropped frame.
ERROR_CLASS = 0xFFFFFFFF


def image_words(image_shape: tuple[int, ...] | list[int]) -> int:
    """Return the 32-bit words of one image frame: four pixels a word, the last zero-padded."""
    return -(-int(np.prod(image_shape)) // 4)


def packet_words(num_classes: int, layers: int) -> int:
    """Return the words of one result packet: logits, class, cycles, spike counts."""
    return num_classes + 2 + layers


def result_words(export: Export) -> int:
    """Return the words of ``export``'s result packet: ``K + 2 + 7L + 2``."""
    return packet_words(export.arch["num_classes"], len(export.layer_names()))


def check_images(images: object, image_shape: Sequence[int]) -> np.ndarray:
    """Return ``images`` if it is a ``uint8`` batch ``[B, C, H, W]`` of ``image_shape``.

    Raises
    ------
    StepvitError
        If it is not a numpy array, not ``uint8``, not of the image shape, or empty.
    """
    expected = tuple(int(size) for size in image_shape)
    if not isinstance(images, np.ndarray):
        raise StepvitError(f"images: expected a numpy uint8 array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise StepvitError(f"images: expected dtype uint8, got {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        wanted = "[B, " + ", ".join(str(size) for size in expected) + "]"
        raise StepvitError(f"images: expected shape {wanted}, got {list(images.shape)}")
    if images.shape[0] == 0:
        raise StepvitError("images: the batch is empty")
    return images


def pack_images(images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Pack images into input frames: four pixels per little-endian 32-bit word.

    Parameters
    ----------
    images : numpy.ndarray
        ``uint8 [B, C, H, W]``; pixels go in ``[C, H, W]`` raster order, byte 0 first.
    out : numpy.ndarray, optional
        ``uint32 [>= B, words]`` to fill (a DMA buffer); its first ``B`` rows are written.

    Returns
    -------
    numpy.ndarray
        ``uint32 [B, words]`` (a view of ``out`` when given).
    """
    batch = images.shape[0]
    pixels = images.reshape(batch, -1)
    words = image_words(images.shape[1:])
    padded = np.zeros((batch, 4 * words), dtype=np.uint8)
    padded[:, : pixels.shape[1]] = pixels
    frames = padded.view("<u4").astype(np.uint32, copy=False)
    if out is None:
        return frames
    out[:batch] = frames
    return out[:batch]


def unpack_images(frames: np.ndarray, image_shape: tuple[int, ...] | list[int]) -> np.ndarray:
    """Invert :func:`pack_images`: ``uint32 [B, words]`` frames to ``uint8 [B, C, H, W]``."""
    pixels = int(np.prod(image_shape))
    raw = np.ascontiguousarray(frames, dtype="<u4").view(np.uint8)
    return raw[:, :pixels].reshape((frames.shape[0], *image_shape)).copy()


def pack_results(logits: np.ndarray, predicted: np.ndarray, cycles: np.ndarray,
                 spike_totals: np.ndarray) -> np.ndarray:
    """Lay results out as result packets (``uint32 [B, K + 2 + layers]``), as the hardware does.

    Logits are two's complement, so that :func:`unpack_results` sign-extends them back.
    """
    columns = [
        np.asarray(logits, dtype=np.int64) & 0xFFFFFFFF,
        (np.asarray(predicted, dtype=np.int64) & 0xFFFFFFFF)[:, None],
        np.asarray(cycles, dtype=np.int64)[:, None],
        np.asarray(spike_totals, dtype=np.int64),
    ]
    return np.concatenate(columns, axis=1).astype(np.uint32)


def unpack_results(packets: np.ndarray, num_classes: int) -> tuple[np.ndarray, ...]:
    """Split result packets into logits, predicted class, cycles and spike totals.

    Parameters
    ----------
    packets : numpy.ndarray
        ``uint32 [B, K + 2 + layers]``.
    num_classes : int
        ``K``.

    Returns
    -------
    tuple of numpy.ndarray
        ``logits`` (int64, sign-extended from 32 bits), ``predicted`` (int64, ``-1`` for
        a frame error), ``cycles`` (int64), ``spike_totals`` (int64), per image.
    """
    words = np.asarray(packets, dtype=np.uint32)
    logits = words[:, :num_classes].view(np.int32).astype(np.int64)
    class_word = words[:, num_classes].astype(np.int64)
    predicted = np.where(class_word == ERROR_CLASS, -1, class_word)
    cycles = words[:, num_classes + 1].astype(np.int64)
    spike_totals = words[:, num_classes + 2:].astype(np.int64)
    return logits, predicted, cycles, spike_totals


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
