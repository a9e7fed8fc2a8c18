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

A convolutional stem keeps its parameters in constant tables and ROMs of its own
(``rtl/stem_*.py``); a ``ddr`` design of an export with a stem is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepvit.model.export import Export
from stepvit.rtl.core_plan import CorePlan
from stepvit.rtl.weight_image import ImageMemory, image_checksum, pack_image

#: The name of the one-word memory (a register) holding the head's biases.
HEAD_BIAS = "head_bias"


def check_ddr_export(export: Export) -> None:
    """Refuse an export a ``weights="ddr"`` design cannot load (one with a stem).

    Raises
    ------
    ValueError
        Naming the reason.
    """
    if export.arch.get("stem"):
        raise ValueError("weights ddr: an export with a convolutional stem is not supported "
                         "yet (the stem's parameters are constant tables); use weights rom")


def image_memories(plan: CorePlan) -> list[ImageMemory]:
    """Return the parameter memories of ``plan``'s core, in the image's (loader's) order.

    Their depths are the words the plan packs (at least one); the RAMs of the core are as
    deep as their ROMs would be.
    """
    geometry = plan.geometry
    lanes, bits = geometry.lanes, geometry.bits
    return [
        ImageMemory("weights", 8 * lanes, max(len(plan.weight_words), 1)),
        ImageMemory("biases", geometry.bias_bits * lanes, max(len(plan.bias_words), 1)),
        ImageMemory("thresholds", bits["membrane"] * lanes, max(len(plan.theta_words), 1)),
        ImageMemory("stream_spike", bits["stream"] * lanes, geometry.dim_chunks),
        ImageMemory(HEAD_BIAS, bits["logit"] * geometry.num_classes, 1),
    ]


def head_bias_word(plan: CorePlan) -> int:
    """Return the head's biases packed into one word, class 0 in the low bits."""
    logit_bits = plan.geometry.bits["logit"]
    mask = (1 << logit_bits) - 1
    return sum((int(value) & mask) << (k * logit_bits) for k, value in enumerate(plan.head_bias))


def image_contents(plan: CorePlan) -> list[list[int]]:
    """Return the words of each memory of :func:`image_memories`, in the same order.

    ``plan`` must have been built with its contents (``CorePlan(export, lanes=...)``).
    """
    return [list(plan.weight_words), list(plan.bias_words), list(plan.theta_words),
            list(plan.stream_spike_words), [head_bias_word(plan)]]


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


def design_image(export: Export, *, lanes: int, data_width: int = 64) -> DesignImage:
    """Return ``export``'s weight image for a ``ddr`` design of ``lanes`` lanes.

    Raises
    ------
    ValueError
        For an export with a stem, a lane count the core refuses, or a data width AXI has
        not.
    """
    check_ddr_export(export)
    plan = CorePlan(export, lanes=lanes)
    memories = image_memories(plan)
    contents = image_contents(plan)
    image = pack_image(memories, contents, data_width)
    return DesignImage(memories=memories, contents=contents, data_width=data_width,
                       image=image, checksum=image_checksum(image))


__all__ = ["HEAD_BIAS", "DesignImage", "check_ddr_export", "design_image", "head_bias_word",
           "image_contents", "image_memories"]
