"""Write the accelerator's Verilog and a report of what was generated."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from amaranth.back import rtlil, verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from stepvit.model.export import Export
from stepvit.model.export.errors import StepvitError
from stepvit.rtl.build_folder import export_image_path, image_stem_lanes, image_widths
from stepvit.rtl.design_image import design_image
from stepvit.rtl.protocol import WEIGHT_MODES
from stepvit.rtl.ram_style import placement_lists
from stepvit.rtl.top import DEFAULT_DATA_WIDTH, DEFAULT_MAX_BURST, TOP_NAME, StepvitAccel
from stepvit.rtl.weight_image import image_layout

#: File names inside a build folder.
VERILOG_FILE = f"{TOP_NAME}.v"
#: The same design as Yosys RTLIL, the form the Verilog is written from. Yosys reads it in
#: seconds where its Verilog frontend takes many minutes over large weight memories.
RTLIL_FILE = f"{TOP_NAME}.il"
REPORT_FILE = "report.json"
#: A ``weights="ddr"`` design's weight image of the export it was generated with.
WEIGHT_IMAGE_FILE = "weights.img"

# A Verilog memory: ``reg [W-1:0] name [D-1:0];`` (Amaranth writes each as one array).
_MEMORY_DECLARATION = re.compile(
    r"^\s*reg\s+(?:\[(\d+):(\d+)\]\s+)?(\S+)\s*\[(\d+):(\d+)\]\s*;", re.MULTILINE
)


def to_verilog(design: StepvitAccel) -> str:
    """Return the Verilog text of ``design`` with the top module named ``stepvit_accel``."""
    return verilog.convert(design, name=TOP_NAME, emit_src=False)


def rtlil_to_verilog(rtlil_text: str) -> str:
    """Return the Verilog text of a design's RTLIL (:func:`to_rtlil`), not elaborating it again.

    Amaranth writes its Verilog from its RTLIL; a second elaboration can number a few
    internal nets otherwise, the logic the same.
    """
    # amaranth.back.verilog.convert's own second half (amaranth is pinned: pyproject.toml)
    return verilog._convert_rtlil_text(rtlil_text)


def to_rtlil(design: StepvitAccel) -> str:
    """Return the RTLIL text of ``design`` with the top module named ``stepvit_accel``."""
    return rtlil.convert(design, name=TOP_NAME, emit_src=False)


def memories_of(verilog_text: str) -> list[dict[str, Any]]:
    """Return the memories declared in ``verilog_text``: name, width, depth, bits."""
    memories = []
    for match in _MEMORY_DECLARATION.finditer(verilog_text):
        msb, lsb, name, first, last = match.groups()
        width = abs(int(msb) - int(lsb)) + 1 if msb is not None else 1
        depth = abs(int(first) - int(last)) + 1
        memories.append({"name": name, "width": width, "depth": depth, "bits": width * depth})
    return memories


def port_list(design: StepvitAccel) -> list[dict[str, Any]]:
    """Return the top's ports: name, direction (``in``/``out``) and width."""
    return [
        {
            "name": name,
            "direction": "in" if member.flow == wiring.In else "out",
            "width": Shape.cast(member.shape).width,
        }
        for name, member in design.signature.members.items()
    ]


def write_weight_image(export: Export, out_dir: Path, *, lanes: int, data_width: int,
                       stem_lanes: int | None = None,
                       widths: dict[str, int] | None = None,
                       stem_chunk_major: bool = False) -> dict[str, Any]:
    """Write ``export``'s weight image into ``out_dir``; return its description.

    The description: the file, its bytes, its checksum (16 hex digits, what the design's
    ``WEIGHTS_CHECKSUM_HI``/``LO`` read after a good load), the AXI data width and each
    memory's name, width, depth and byte offset, in the image's order. ``widths``: the
    design's bit widths the image is packed at (default the export's);
    ``stem_chunk_major``: the stem's tap words in the chunk-major order.
    """
    image = design_image(export, lanes=lanes, data_width=data_width, stem_lanes=stem_lanes,
                         widths=widths, stem_chunk_major=stem_chunk_major)
    (out_dir / WEIGHT_IMAGE_FILE).write_bytes(image.image)
    layout = image_layout(image.memories, data_width)
    return {
        "file": WEIGHT_IMAGE_FILE,
        "bytes": len(image.image),
        "checksum": f"{image.checksum:016x}",
        "data_width": data_width,
        "config_hash": f"{export.config_hash:08x}",
        "memories": [{"name": region.memory.name, "width": region.memory.width,
                      "depth": region.memory.depth, "offset": region.offset}
                     for region in layout.regions],
    }


def copy_export_image(export: Export, out_dir: Path, *, lanes: int, data_width: int,
                      widths: dict[str, int] | None = None,
                      stem_lanes: int | None = None,
                      stem_chunk_major: bool = False) -> Path:
    """Copy the build's ``weights.img`` (``export``'s) into the export's folder.

    Named by its layout (:func:`~stepvit.rtl.build_folder.export_image_path`; an export
    with a convolutional stem by its stem lanes too, ``stem_lanes`` as the design record
    holds them, ``None`` the core's ``lanes``; ``widths``, the design's bit widths, where
    they are not the export's, and ``stem_chunk_major``, a chunk-major stem): what the host
    loads on a board. Returns the copy's path.

    Raises
    ------
    StepvitError
        If the export's folder cannot be written.
    """
    copy = export_image_path(export.path, lanes, data_width,
                             image_widths(export.bit_widths, widths), stem_chunk_major,
                             stem_lanes=image_stem_lanes(export.arch, lanes, stem_lanes))
    try:
        copy.write_bytes((Path(out_dir) / WEIGHT_IMAGE_FILE).read_bytes())
    except OSError as error:
        raise StepvitError(f"cannot write the export's weight image {copy}: "
                           f"{error.strerror or error}") from None
    return copy


def reuse_ddr_build(export: Export, out_dir: str | Path, *, lanes: int,
                    data_width: int, widths: dict[str, int] | None = None,
                    stem_lanes: int | None = None,
                    stem_chunk_major: bool = False) -> dict[str, Any]:
    """Point the ddr build in ``out_dir`` at ``export``, an export of the build's shape.

    Keeps the Verilog, writes ``export``'s image (packed at the design's ``widths``,
    ``stem_lanes`` and stem schedule, ``stem_chunk_major``) and rewrites ``report.json``'s
    export fields.

    The Verilog of a ``weights="ddr"`` design depends only on the shape, its widths, the
    lanes and the AXI figures, which the caller has checked (the export's widths fit the
    design's); returns the updated report.
    """
    out_dir = Path(out_dir)
    report = json.loads((out_dir / REPORT_FILE).read_text())
    report.update(export=str(export.path), name=export.manifest.get("name"),
                  config_hash=f"{export.config_hash:08x}",
                  weight_image=write_weight_image(export, out_dir, lanes=lanes,
                                                  data_width=data_width,
                                                  stem_lanes=stem_lanes, widths=widths,
                                                  stem_chunk_major=stem_chunk_major))
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def generate(
    export: Export,
    out_dir: str | Path,
    *,
    lanes: int,
    core: wiring.Component | None = None,
    with_rtlil: bool = True,
    stem_lanes: int | None = None,
    stem_chunk_major: bool = False,
    weights: str = "rom",
    data_width: int = DEFAULT_DATA_WIDTH,
    max_burst: int = DEFAULT_MAX_BURST,
    widths: dict[str, int] | None = None,
    stream_weights: bool = False,
    tile_words: int | None = None,
    spike_word_bits: int | None = None,
    stream_ddr: bool = False,
    ram_styles: Mapping[str, str] | None = None,
    stem_maps_ddr: bool = False,
) -> dict[str, Any]:
    """Generate ``stepvit_accel.v``, ``stepvit_accel.il`` and ``report.json`` in ``out_dir``.

    Parameters
    ----------
    export : Export
        The validated export.
    out_dir : str or Path
        Build folder (created if missing).
    lanes : int
        Parallel accumulator lanes of the core.
    core : wiring.Component, optional
        A stand-in for the core (tests only; see :class:`StepvitAccel`).
    with_rtlil : bool
        Also write the RTLIL (for ``stepvit synth``; a simulation needs only the Verilog).
    stem_lanes : int, optional
        The stem engine's lanes (an export with a convolutional stem; default ``lanes``).
    stem_chunk_major : bool
        An export with a convolutional stem only: the stem runs chunk-major
        (:class:`~stepvit.rtl.top.StepvitAccel`; a ``"ddr"`` image holds its tap words in
        that order); the report says ``stem_chunk_major: true``, only then.
    weights : str
        ``"rom"`` (parameters baked in) or ``"ddr"`` (loaded from a weight image: the
        Verilog depends only on the export's shape; the export's image is written as
        ``weights.img`` and described in the report's ``weight_image``).
    data_width, max_burst : int
        ``"ddr"`` only: the AXI read master's beat width and longest burst.
    widths : dict of str to int, optional
        ``"ddr"`` only: the design's bit widths (default the export's; see
        :func:`~stepvit.model.export.design_widths`), recorded as the report's
        ``parameters.bit_widths``.
    stream_weights : bool
        ``"ddr"`` only: the core streams each pass's weights from the image during compute
        (:class:`~stepvit.rtl.top.StepvitAccel`); the report's ``weight_tiles`` gives the
        tiles' count, the largest's words and the bytes an image reads.
    tile_words : int, optional
        ``stream_weights`` only: the most words of one tile (longer weight passes are split).
    spike_word_bits : int, optional
        The widest word of a spike map (:class:`~stepvit.rtl.top.StepvitAccel`): a token's
        spikes wider than this are held as several words. The report says
        ``spike_word_bits``, only where given (default: one word a token).
    stream_ddr : bool
        ``stream_weights`` only: the residual stream is in DDR
        (:class:`~stepvit.rtl.top.StepvitAccel`); the report's ``activations`` gives the
        activation buffer's bytes and word, only then.
    ram_styles : mapping of str to str, optional
        The memories the sizing model placed (:func:`stepvit.rtl.sizing.place_ultraram`,
        :func:`stepvit.rtl.sizing.place_distributed`, by its names): each is marked
        ``ram_style`` ``"ultra"`` (UltraRAM) or ``"distributed"`` (LUTs)
        (:mod:`stepvit.rtl.ram_style`). The report lists them as ``ultraram`` and
        ``distributed``, each only where there are some.
    stem_maps_ddr : bool
        With ``stream_ddr`` and a chunk-major stem: the stem's maps are in the activation
        buffer too (:mod:`stepvit.rtl.stem_map_ddr`); the report's ``activations`` counts
        them and gives their ``stem_maps`` offset and bytes.

    Returns
    -------
    dict
        The report written to ``report.json``.

    Raises
    ------
    StepvitError
        If the design refuses a parameter (a lane count the core cannot use, a
        ``spike_word_bits`` that cannot cut its spike words).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if weights not in WEIGHT_MODES:
        raise StepvitError(f"weights must be one of {', '.join(WEIGHT_MODES)}, not {weights!r}")
    try:
        design = StepvitAccel(export, lanes=lanes, core=core, stem_lanes=stem_lanes,
                              stem_chunk_major=stem_chunk_major, weights=weights,
                              data_width=data_width, max_burst=max_burst,
                              widths=widths, stream_weights=stream_weights,
                              tile_words=tile_words, spike_word_bits=spike_word_bits,
                              stream_ddr=stream_ddr, ram_styles=ram_styles,
                              stem_maps_ddr=stem_maps_ddr)
    except ValueError as error:  # a parameter the design refuses, such as the lane count
        raise StepvitError(f"cannot build the accelerator: {error}") from None
    # the design elaborated once: its RTLIL, and the Verilog written from it
    rtlil_text = to_rtlil(design) if with_rtlil else None
    verilog_text = to_verilog(design) if rtlil_text is None else rtlil_to_verilog(rtlil_text)
    (out_dir / VERILOG_FILE).write_text(verilog_text)
    if rtlil_text is not None:  # after the Verilog: synth reads an RTLIL at least as new
        (out_dir / RTLIL_FILE).write_text(rtlil_text)
    arch = export.arch
    memories = memories_of(verilog_text)
    report = {
        "top": TOP_NAME,
        "verilog": VERILOG_FILE,
        "rtlil": RTLIL_FILE if with_rtlil else None,
        "export": str(export.path),
        "name": export.manifest.get("name"),
        "config_hash": f"{export.config_hash:08x}",
        "lanes": lanes,
        "stem_lanes": (stem_lanes or lanes) if arch.get("stem") else None,
        **({"stem_chunk_major": True} if stem_chunk_major else {}),
        **({"spike_word_bits": spike_word_bits} if spike_word_bits is not None else {}),
        **placement_lists(ram_styles),
        "parameters": {
            "image_shape": list(arch["image_shape"]),
            "patch": arch["patch"],
            "dim": arch["dim"],
            "heads": arch["heads"],
            "depth": arch["depth"],
            "mlp_dim": arch["mlp_dim"],
            "num_classes": arch["num_classes"],
            "t_max": export.t_max,
            "bit_widths": design.export.bit_widths,  # the design's
        },
        "image_words": design.image_words,
        "packet_words": design.packet_words,
        "ports": port_list(design),
        "memories": memories,
        "memory_bits": sum(memory["bits"] for memory in memories),
    }
    if weights == "ddr":
        report["weights"] = "ddr"
        report["shape_hash"] = f"{export.shape_hash:08x}"
        report["weight_image"] = write_weight_image(export, out_dir, lanes=lanes,
                                                    data_width=data_width,
                                                    stem_lanes=stem_lanes, widths=widths,
                                                    stem_chunk_major=stem_chunk_major)
        if stream_weights:
            tiles = design.core.tiles
            report["weight_tiles"] = {"tiles": len(tiles.words), "tile_words": tile_words,
                                      "depth": tiles.depth,
                                      "word_bytes": tiles.word_bytes,
                                      "bytes_per_image": tiles.bytes_per_image}
        if stream_ddr:
            unit = design.core.stream_unit
            report["activations"] = {"bytes": design.core.activation_bytes,
                                     "word_bytes": unit.word_bytes, "words": unit.words}
            if stem_maps_ddr:
                report["activations"]["stem_maps"] = {
                    "offset": design.core.maps_offset,
                    "bytes": design.core.activation_bytes - design.core.maps_offset}
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
