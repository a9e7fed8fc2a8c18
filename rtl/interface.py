"""The signature between the AXI top (``rtl/top.py``) and the compute core (``rtl/core.py``).

The top owns the AXI streams, the register file, the frame check and the image buffer;
the core owns the network. They meet here, so that each can be built and tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stepvit.model.export import Export
from stepvit.rtl.protocol import image_words as frame_words
from stepvit.rtl.weight_image import ImageMemory
from stepvit.rtl.weight_loader import write_signature

#: Width of every spike-count word in the result packet (rtl/PROTOCOL.md).
SPIKE_COUNT_BITS = 32


def image_words(export: Export) -> int:
    """Return the number of 32-bit words of one image frame (four pixels a word)."""
    return frame_words(export.arch["image_shape"])


def parameters_signature(memories: Sequence[ImageMemory]) -> wiring.Signature:
    """Return the write sides of parameter memories, as the weight loader drives them.

    One member per memory, named by it, with ``write_en``, ``write_addr`` and
    ``write_data`` (:func:`~stepvit.rtl.weight_loader.write_signature`): the loader's
    ``writes`` member has this signature.
    """
    return wiring.Signature({memory.name: Out(write_signature(memory)) for memory in memories})


def core_signature(export: Export,
                   parameters: Sequence[ImageMemory] | None = None,
                   tile_axi: dict[str, wiring.Member] | None = None,
                   stream_axi: dict[str, wiring.Member] | None = None) -> wiring.Signature:
    """Return the core's signature for ``export`` (from the core's point of view).

    ``parameters``: a ``weights="ddr"`` core's parameter memories
    (:func:`~stepvit.rtl.design_image.image_memories`); it then has a ``parameters`` input
    that the weight loader drives. ``tile_axi``: a core that streams its weights
    (``stream_weights=True``): the AXI read members of its tile buffer, by name, which the
    core has as ``tile_<name>``, with ``weights_base``, ``tiles_enable``, ``tiles_idle``,
    ``weight_stalls`` and ``stem_weight_stalls``. ``stream_axi``: a core whose residual
    stream is in DDR (``stream_ddr=True``): the AXI read and write members of its
    :class:`~stepvit.rtl.stream_ddr.StreamDdr`, which the core has as ``act_<name>``, with
    ``activations_base``, ``stream_stalls``, ``stem_map_stalls`` and ``stream_error``.

    Members
    -------
    load : In(1)
        One-cycle pulse: the image buffer holds a complete, checked frame; copy it into the
        core's free patch bank (through ``img_addr``/``img_data``). The core has two banks,
        so an image can be loaded while the one before it computes; the top pulses ``load``
        only while a bank is free (at most one loaded image waits) and not while loading.
    loaded : Out(1)
        One-cycle pulse: the load is done; the image buffer may take the next frame.
    start : In(1)
        One-cycle pulse: compute the oldest loaded image (the top pulses it only after a
        ``loaded`` not yet started, and not while ``busy``).
    busy : Out(1)
        High from ``start`` until ``done``.
    done : Out(1)
        One-cycle pulse: ``logits``, ``predicted`` and ``spike_counts`` are valid and stay
        so until the next ``start``.
    img_addr : Out(range(image_words))
        Word address into the top's image buffer, while loading (rtl/PROTOCOL.md).
    img_data : In(32)
        The word at the ``img_addr`` of the previous cycle (synchronous read).
    masks : In(ArrayLayout(unsigned(t_max), modules))
        The live mask registers (bit t enables step t); sampled by the core at ``start``.
    logits : Out(ArrayLayout(signed(logit_bits), num_classes))
    predicted : Out(unsigned(8))
    spike_counts : Out(ArrayLayout(unsigned(32), layers))
        Spike count per LIF layer in SPEC.md section 1 order.
    walk_hold : In(1)
        Pause the walk this cycle: it issues no event and takes no word (a pass's
        activations not yet arrived from DDR would hold it). The results are the same,
        later by the cycles held. The accelerator leaves it low (a test's hook); a core
        whose stream is in DDR holds its walk itself (``stream_stalls``).
    walk_held : Out(1)
        The walk is held this cycle while it runs a pass, by ``walk_hold`` or by the stream
        in DDR (each such cycle delays the run by one).
    parameters : In(parameters_signature(parameters))
        With ``parameters`` only: the memories' write sides, driven by the weight loader.
    weights_base : In(32)
        With ``tile_axi`` only: the weight image's byte address (its weights region is
        where the tiles are read from).
    tiles_enable : In(1)
        With ``tile_axi`` only: the image is loaded; fetch tiles (low: stop after the
        fetch under way and start again from the first tile).
    tiles_idle : Out(1)
        With ``tile_axi`` only: no tile fetch is under way (the AXI port may change hands).
    weight_stalls : Out(32)
        With ``tile_axi`` only: cycles the core has waited for a tile since reset (wraps).
    stem_weight_stalls : Out(32)
        With ``tile_axi`` only: cycles the stem has waited for a tap tile since reset (wraps;
        0 unless its taps stream).
    tile_* : the tile buffer's AXI read channels (``tile_axi``).
    activations_base : In(32)
        With ``stream_axi`` only: the activation buffer's byte address (the stream of
        every step, :mod:`stepvit.rtl.stream_ddr`).
    stream_stalls : Out(32)
        With ``stream_axi`` only: cycles the walk has waited for the stream's reads or
        write room since reset (wraps).
    stem_map_stalls : Out(32)
        With ``stream_axi`` only: cycles the stem has waited for its maps in DDR since
        reset (wraps; 0 unless its maps are in DDR, ``stem_maps_ddr``).
    stream_error : Out(1)
        With ``stream_axi`` only: the image's stream traffic went wrong (an AXI error
        response, or reads and closings that disagree); cleared at ``start``.
    act_* : the stream's AXI read and write channels (``stream_axi``).
    """
    t_max = export.t_max
    extra = ({} if parameters is None
             else {"parameters": In(parameters_signature(parameters))})
    if tile_axi is not None:
        extra.update({"weights_base": In(32), "tiles_enable": In(1), "tiles_idle": Out(1),
                      "weight_stalls": Out(32), "stem_weight_stalls": Out(32)})
        extra.update({f"tile_{name}": member for name, member in tile_axi.items()})
    if stream_axi is not None:
        extra.update({"activations_base": In(32), "stream_stalls": Out(32),
                      "stem_map_stalls": Out(32), "stream_error": Out(1)})
        extra.update({f"act_{name}": member for name, member in stream_axi.items()})
    return wiring.Signature(
        {
            "load": In(1),
            "loaded": Out(1),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "img_addr": Out(range(max(image_words(export), 2))),
            "img_data": In(32),
            "masks": In(data.ArrayLayout(unsigned(t_max), len(export.module_names))),
            "logits": Out(
                data.ArrayLayout(
                    signed(export.bit_widths["logit"]), export.arch["num_classes"]
                )
            ),
            "predicted": Out(unsigned(8)),
            "spike_counts": Out(
                data.ArrayLayout(unsigned(SPIKE_COUNT_BITS), len(export.layer_names()))
            ),
            "walk_hold": In(1),
            "walk_held": Out(1),
            **extra,
        }
    )
