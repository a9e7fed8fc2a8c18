"""A design's parameter memories as a weight image: which memories, and their words.

In a ``weights="ddr"`` design (``stepvit rtl --weights ddr``) every memory whose contents
come from the export's values is a RAM that the
:class:`~stepvit.rtl.weight_loader.WeightLoader` fills from a weight image in DDR
(docs/ddr-dataflow.md). This module names those memories, in the loader's order, and gives
their words for an export from the same :class:`~stepvit.rtl.core_plan.CorePlan` that
initialises the ROMs of a ``rom`` design, so an image holds by construction what the ROMs
would:

- ``weights``, ``biases``, ``thresholds``, ``stream_spike``: the core's four ROMs
  (``rtl/core_memories.py``), their words as :class:`CorePlan` packs them;
- ``head_bias``: one word, the head's biases (``CorePlan.head_bias``), class ``k`` in bits
  ``k·logit .. (k+1)·logit - 1`` as two's complement: the value the logits are preset to
  at each image, a constant of the ``rom`` design's sum stage, a register here.

With a convolutional stem (a :class:`~stepvit.rtl.stem_plan.StemPlan` at the stem's
lanes), the stem engine's parameters follow, in this order (:func:`stem_memories`):

- ``stem_tap0`` .. ``stem_tap{k²-1}``: the conv weights, one memory per tap of the largest
  kernel ``k`` (the ``rom`` design's tap ROMs,
  :func:`~stepvit.rtl.stem_conv.tap_words`): ``8·stem_lanes`` bits a word,
  every module's words (input channel, chunk) in turn; for a chunk-major stem
  (``StemPlan(chunk_major=True)``) (chunk, input channel), so that each (module, chunk)'s
  words are contiguous;
- ``stem_biases`` and ``stem_thresholds``: every module's biases (the banks' current
  width) and thresholds (the membrane's), ``stem_lanes`` a word, module after module,
  each padded to whole chunks as the ``rom`` design's constant tables are (a spare lane:
  bias 0, the largest threshold).

The stem's spike values ``E`` are the ``stream_spike`` words above (the stem's tokens are
``core lanes`` wide): the loader writes them into the core's memory and the stem's copy
at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepvit.model.export import Export
from stepvit.rtl.core_plan import CorePlan
from stepvit.rtl.stem_conv import shared_sum_bits, tap_words
from stepvit.rtl.stem_engine import STEM_BIASES, STEM_THRESHOLDS, lif_depth, tap_memory_name
from stepvit.rtl.stem_plan import StemPlan
from stepvit.rtl.stem_unit import chunk_words, padded_lif_values
from stepvit.rtl.weight_image import ImageMemory, image_checksum, pack_image

#: The name of the one-word memory (a register) holding the head's biases.
HEAD_BIAS = "head_bias"


def stem_plan_of(export: Export, *, lanes: int, stem_lanes: int | None = None,
                 chunk_major: bool = False) -> StemPlan | None:
    """Return the plan of ``export``'s stem at ``stem_lanes`` (default ``lanes``), or ``None``.

    ``chunk_major``: the engine's chunk-major schedule
    (:class:`~stepvit.rtl.stem_plan.StemPlan`), whose tap words an image lays out chunk by
    chunk (:func:`~stepvit.rtl.stem_conv.tap_words`).
    """
    if not export.arch.get("stem"):
        return None
    return StemPlan.from_export(export, lanes=stem_lanes or lanes, chunk_major=chunk_major)


def stem_memories(stem: StemPlan, bits: dict[str, int]) -> list[ImageMemory]:
    """Return the stem engine's parameter memories, in the image's order.

    Each tap memory holds every module's ``input channels x chunks`` words (as
    :attr:`~stepvit.rtl.stem_conv.StemConvBanks.tap_depth`); the biases and thresholds
    memories every module's chunks.
    """
    taps = max(stage.kernel ** 2 for stage in stem.stages)
    modules = range(len(stem.stages))
    tap_depth = sum(stem.stages[index].in_shape[0] * stem.chunks(index) for index in modules)
    depth = lif_depth(stem)
    return ([ImageMemory(tap_memory_name(tap), 8 * stem.lanes, tap_depth)
             for tap in range(taps)]
            + [ImageMemory(STEM_BIASES, shared_sum_bits(bits) * stem.lanes, depth),
               ImageMemory(STEM_THRESHOLDS, bits["membrane"] * stem.lanes, depth)])


def stem_contents(stem: StemPlan, export: Export) -> list[list[int]]:
    """Return the words of each memory of :func:`stem_memories` for ``export``."""
    bits = export.bit_widths
    sum_bits = shared_sum_bits(bits)
    taps = tap_words([export.arrays[f"{stage.name}.weight"] for stage in stem.stages],
                     stem.lanes, chunk_major=stem.chunk_major)
    biases, thresholds = [], []
    for index, stage in enumerate(stem.stages):
        bias, threshold = padded_lif_values(stem, index, export.arrays[f"{stage.name}.bias"],
                                            export.thresholds[stage.name], bits["membrane"])
        biases += chunk_words(bias, stem.lanes, sum_bits)
        thresholds += chunk_words(threshold, stem.lanes, bits["membrane"])
    return [*taps, biases, thresholds]


def image_memories(plan: CorePlan, stem: StemPlan | None = None) -> list[ImageMemory]:
    """Return the parameter memories of ``plan``'s core, in the image's (loader's) order.

    Their depths are the words the plan packs (at least one); the RAMs of the core are as
    deep as their ROMs would be. With ``stem`` (an export with a convolutional stem, at the
    stem's lanes), the stem engine's memories follow (:func:`stem_memories`).
    """
    geometry = plan.geometry
    lanes, bits = geometry.lanes, geometry.bits
    stem_part = [] if stem is None else stem_memories(stem, bits)
    return [
        ImageMemory("weights", 8 * lanes, max(len(plan.weight_words), 1)),
        ImageMemory("biases", geometry.bias_bits * lanes, max(len(plan.bias_words), 1)),
        ImageMemory("thresholds", bits["membrane"] * lanes, max(len(plan.theta_words), 1)),
        ImageMemory("stream_spike", bits["stream"] * lanes, geometry.dim_chunks),
        ImageMemory(HEAD_BIAS, bits["logit"] * geometry.num_classes, 1),
        *stem_part,
    ]


def head_bias_word(plan: CorePlan) -> int:
    """Return the head's biases packed into one word, class 0 in the low bits."""
    logit_bits = plan.geometry.bits["logit"]
    mask = (1 << logit_bits) - 1
    return sum((int(value) & mask) << (k * logit_bits) for k, value in enumerate(plan.head_bias))


def image_contents(plan: CorePlan, stem: StemPlan | None = None,
                   export: Export | None = None) -> list[list[int]]:
    """Return the words of each memory of :func:`image_memories`, in the same order.

    ``plan`` must have been built with its contents (``CorePlan(export, lanes=...)``);
    with ``stem``, ``export`` gives the stem's values.
    """
    core = [list(plan.weight_words), list(plan.bias_words), list(plan.theta_words),
            list(plan.stream_spike_words), [head_bias_word(plan)]]
    if stem is None:
        return core
    if export is None:
        raise ValueError("image_contents: a stem's words need the export")
    return core + stem_contents(stem, export)


@dataclass(frozen=True)
class DesignImage:
    """The weight image of an export for one ``weights="ddr"`` design.

    Attributes
    ----------
    memories : list of ImageMemory
        The design's parameter memories, in the image's order.
    contents : list of list of int
        Their words for the export.
    data_width : int
        Bits of an AXI beat (the design's ``m_axi_rdata``).
    image : bytes
        The packed image (:func:`~stepvit.rtl.weight_image.pack_image`).
    checksum : int
        :func:`~stepvit.rtl.weight_image.image_checksum` of ``image``: what the design's
        ``WEIGHTS_CHECKSUM_HI``/``LO`` registers read after a good load.
    """

    memories: list[ImageMemory]
    contents: list[list[int]]
    data_width: int
    image: bytes
    checksum: int


def design_image(export: Export, *, lanes: int, data_width: int = 64,
                 stem_lanes: int | None = None,
                 widths: dict[str, int] | None = None,
                 stem_chunk_major: bool = False) -> DesignImage:
    """Return ``export``'s weight image for a ``ddr`` design of ``lanes`` lanes.

    ``stem_lanes``: the stem engine's lanes (an export with a convolutional stem; default
    ``lanes``); ``stem_chunk_major``: the stem's chunk-major schedule (its tap words in
    that order). ``widths``: the design's bit widths (default the export's): the memories'
    words, hence the image, are packed at the design's widths.

    Raises
    ------
    ValueError
        For a lane count the core refuses, a data width AXI has not, or widths the
        export's do not fit in.
    """
    export = export.at_widths(widths)
    plan = CorePlan(export, lanes=lanes)
    stem = stem_plan_of(export, lanes=lanes, stem_lanes=stem_lanes,
                        chunk_major=stem_chunk_major)
    memories = image_memories(plan, stem)
    contents = image_contents(plan, stem, export)
    image = pack_image(memories, contents, data_width)
    return DesignImage(memories=memories, contents=contents, data_width=data_width,
                       image=image, checksum=image_checksum(image))


__all__ = ["HEAD_BIAS", "DesignImage", "design_image", "head_bias_word", "image_contents",
           "image_memories", "stem_contents", "stem_memories", "stem_plan_of"]
