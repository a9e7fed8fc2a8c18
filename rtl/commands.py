"""The ``stepvit rtl`` and ``stepvit synth`` commands.

Only argparse and the standard library at the top: amaranth is imported inside the
commands, so that ``stepvit --help`` runs where it is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepvit.model.export.errors import StepvitError
from stepvit.model.export.options import (
    add_build_argument,
    add_progress_argument,
    input_folder,
    output_folder,
)
from stepvit.rtl.boards import DEFAULT_BOARD
from stepvit.rtl.build_folder import DEFAULT_LANES, add_lanes_argument, check_lanes
from stepvit.rtl.protocol import WEIGHT_MODES
from stepvit.rtl.ram_style import placement_lists

if TYPE_CHECKING:
    from stepvit.model.export import Export


def rtl_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``stepvit rtl``."""
    parser.add_argument("export", help="export directory (manifest.yaml + weights.npz)")
    add_build_argument(parser, "build folder for stepvit_accel.v and report.json",
                       required=True, old_spellings=("--out",))
    add_lanes_argument(parser, f"chosen for --board, else {DEFAULT_LANES}",
                       what="parallel accumulator lanes, up to the widest output row")
    parser.add_argument("--board", default=None,
                        help="pick the lanes of the fastest design whose estimated resources "
                             "fit this board's budget (pynq-z2, kv260, zcu104 or a board "
                             "folder) and, for --weights ddr, take its AXI figures; --lanes "
                             "overrides the pick (built even where the estimate does not fit, "
                             "with a warning)")
    parser.add_argument("--weights", default="rom", metavar="MODE",
                        help="where the parameters live: rom (baked into the bitstream, the "
                             "default) or ddr (RAMs loaded from a weight image in DDR over an "
                             "AXI4 read master: one bitstream per shape; writes weights.img)")
    parser.add_argument("--width-margin", type=int, default=None, metavar="N",
                        help="ddr only: build every datapath width but the weights' N bits "
                             "wider than the export's, so the design also serves retrained "
                             "exports of the shape whose widths exceed these by up to N bits "
                             "(default 0: the export's widths)")
    parser.add_argument("--stream-weights", action="store_true", default=None,
                        help="ddr only: keep no weight memory on chip; the core streams each "
                             "layer's weights from the loaded image in DDR into a "
                             "double-buffered tile while the layer before computes (default: "
                             "the --build folder's ddr design's choice, else off)")
    parser.add_argument("--stream-ddr", action="store_true", default=None,
                        help="with --stream-weights: keep the residual stream in DDR, not on "
                             "chip: each layer reads it ahead and writes it behind through "
                             "FIFOs, in an activation buffer the host gives the accelerator "
                             "(default: the --build folder's ddr design's choice, else off)")
    parser.add_argument("--stem-maps-ddr", action="store_true", default=None,
                        help="with --stream-ddr and --stem-chunk-major: keep the stem's "
                             "spike maps in the activation buffer too, not on chip (default: "
                             "the --build folder's ddr design's choice, else off)")
    parser.add_argument("--tile-words", type=int, default=None, metavar="N",
                        help="with --stream-weights: the most weight words of one tile (a "
                             "layer's weights are fetched in slices of output channels that "
                             "fit; each of the two tile banks holds N words of 8 x lanes bits; "
                             "default: a whole layer's words)")
    parser.add_argument("--stem-lanes", type=int, default=None, metavar="Q",
                        help="the stem engine's lanes, for an export with a convolutional "
                             "stem (default: chosen with --board, else --lanes)")
    parser.add_argument("--stem-chunk-major", action="store_true", default=None,
                        help="for an export with a convolutional stem: run the stem module by "
                             "module, chunk of output channels by chunk, every time step "
                             "inside: one chunk's banks and membranes on chip (less block RAM) "
                             "for a few per cent more cycles; --board sizes it so (default: "
                             "the --build folder's ddr design's choice, else off)")
    parser.add_argument("--spike-word-bits", type=int, default=None, metavar="N",
                        help="the widest word of a spike map: a token's spikes wider than N "
                             "bits are held as several words, which narrows the core's walk "
                             "logic to N bits (a multiple of the lanes; of a head's channels "
                             "where it cuts a model-width word; --board sizes it so; default: "
                             "one word a token, or the --build folder's ddr design's choice)")


def check_spike_word_bits(export: Export, lanes: int, spike_word_bits: int | None) -> None:
    """Refuse a ``--spike-word-bits`` the core's geometry at ``lanes`` cannot take.

    ``None`` (not given) passes; so do lanes the geometry refuses on their own (the
    generator says why, naming the lanes).

    Raises
    ------
    StepvitError
        One line: ``--spike-word-bits:`` and the geometry's reason.
    """
    if spike_word_bits is None:
        return
    from stepvit.rtl.core_plan import CoreGeometry

    try:
        CoreGeometry.from_export(export, lanes=lanes)
    except ValueError:
        return
    try:
        CoreGeometry.from_export(export, lanes=lanes, spike_word_bits=spike_word_bits)
    except ValueError as error:
        raise StepvitError(f"--spike-word-bits: {error}") from None


def rtl(args: argparse.Namespace) -> int:
    """Generate ``stepvit_accel.v`` and ``report.json`` for an export; record its design."""
    check_lanes(args.lanes)
    check_lanes(args.stem_lanes, "--stem-lanes")
    if args.weights not in WEIGHT_MODES:
        raise StepvitError(f"--weights: expected one of {', '.join(WEIGHT_MODES)}, "
                           f"got {args.weights!r}")
    if args.width_margin is not None and args.weights != "ddr":
        raise StepvitError("--width-margin: a rom design holds its export's values at their "
                           "own widths; the option is for --weights ddr")
    if args.stream_weights and args.weights != "ddr":
        raise StepvitError("--stream-weights: a rom design holds its weights on chip; the "
                           "option is for --weights ddr")
    if args.stream_ddr and not args.stream_weights:
        raise StepvitError("--stream-ddr: the stream's reads share the streamed tiles' AXI "
                           "port; the option is for --weights ddr --stream-weights")
    if args.stem_maps_ddr and not args.stream_ddr:
        raise StepvitError("--stem-maps-ddr: the stem's maps go into the stream's activation "
                           "buffer; the option is for --stream-ddr (and --stem-chunk-major)")
    if args.tile_words is not None and not args.stream_weights:
        raise StepvitError("--tile-words: the size of a streamed weight tile; the option is "
                           "for --weights ddr --stream-weights")
    from stepvit.model.export import design_widths, load_export
    from stepvit.rtl.build_folder import record_design
    from stepvit.rtl.generate import VERILOG_FILE, copy_export_image, generate
    from stepvit.rtl.top import DEFAULT_DATA_WIDTH, DEFAULT_MAX_BURST

    export = load_export(args.export)
    if args.stem_lanes is not None and not export.arch.get("stem"):
        raise StepvitError(f"--stem-lanes: {args.export} has no convolutional stem")
    if args.stem_chunk_major and not export.arch.get("stem"):
        raise StepvitError(f"--stem-chunk-major: {args.export} has no convolutional stem")
    build = output_folder(args.build, "--build")
    lanes, stem_lanes, chosen = args.lanes or DEFAULT_LANES, args.stem_lanes, None
    # what the options ask (a stale ddr design in the folder fills in what they leave open)
    asked_lanes, stream_weights, tile_words = args.lanes, args.stream_weights, args.tile_words
    stem_chunk_major, board_name = args.stem_chunk_major, args.board
    spike_word_bits, stream_ddr = args.spike_word_bits, args.stream_ddr
    stem_maps_ddr = args.stem_maps_ddr
    axi = {"data_width": DEFAULT_DATA_WIDTH, "max_burst": DEFAULT_MAX_BURST}
    widths = None
    if args.weights == "ddr":
        try:
            widths = design_widths(export.bit_widths, args.width_margin or 0)
        except ValueError as error:
            raise StepvitError(f"--width-margin: {error}") from None
        if args.board is not None:
            from stepvit.rtl.boards import load_board

            ddr = load_board(args.board).memory()
            axi = {"data_width": ddr.data_width, "max_burst": ddr.max_burst}
        held = ddr_design_to_reuse(build, export, args.lanes, axi,
                                   None if args.width_margin is None else widths,
                                   args.stream_weights, args.stem_chunk_major,
                                   args.spike_word_bits, args.stream_ddr, args.stem_maps_ddr)
        if held is not None and not held[1]:
            return _reuse_ddr_build(build, export, held[0])
        if held is not None:
            # generated again for new generator code: the held design, not the defaults
            design = held[0]
            asked_lanes = asked_lanes or int(design["lanes"])
            stem_lanes = stem_lanes or design.get("stem_lanes")
            lanes = asked_lanes
            if args.width_margin is None:
                widths = {key: int(value) for key, value in design["bit_widths"].items()}
            if stream_weights is None:
                stream_weights = bool(design.get("stream_weights"))
            if stream_weights and tile_words is None:
                tile_words = design.get("tile_words")
            if stream_ddr is None:
                stream_ddr = bool(design.get("stream_ddr"))
            if stem_maps_ddr is None:
                stem_maps_ddr = bool(design.get("stem_maps_ddr"))
            if stem_chunk_major is None:
                stem_chunk_major = bool(design.get("stem_chunk_major"))
            if spike_word_bits is None:
                spike_word_bits = design.get("spike_word_bits")
            board_name = board_name or design.get("board")
            print(f"stepvit rtl: {build} holds a ddr design of this shape from older generator "
                  f"code: generating it again as recorded ({lanes} lanes)", file=sys.stderr)
    # (one lane takes every spike_word_bits some lane count takes: a value no lanes take
    # is refused here, before the sizing weighs them)
    check_spike_word_bits(export, asked_lanes or 1, spike_word_bits)
    if board_name is not None:
        from stepvit.rtl.pace import sample_pace
        from stepvit.rtl.sizing import choose_lanes, estimate
        from stepvit.rtl.synth import board_parameters

        board = board_parameters(board_name)
        pace = sample_pace(export, chunk_major=bool(stem_chunk_major))
        streamed = ({"stream_data_width": axi["data_width"], "tile_words": tile_words}
                    if stream_weights else {})
        if stem_chunk_major:
            streamed["stem_chunk_major"] = True
        if stream_ddr:
            streamed["stream_ddr"] = True
            if stem_maps_ddr:
                streamed["stem_maps_ddr"] = True
        try:
            best, estimates = choose_lanes(export, board, pace, **streamed,
                                           spike_word_bits=spike_word_bits)
        except ValueError as error:
            if asked_lanes is None:
                raise StepvitError(str(error)) from None
            # --lanes given: build them (the board gives the AXI figures) and say so
            best, estimates = None, []
        if asked_lanes is None and stem_lanes is None:
            stem_lanes = best.stem_lanes
        lanes = asked_lanes or best.lanes
        if export.arch.get("stem"):
            stem_lanes = stem_lanes or lanes
        built = next((e for e in estimates if (e.lanes, e.stem_lanes) == (lanes, stem_lanes)),
                     None) or estimate(export, lanes, board, stem_lanes=stem_lanes, **streamed,
                                       spike_word_bits=spike_word_bits)
        if not built.fits:
            print(f"stepvit rtl: warning: {lanes} lanes"
                  f"{'' if stem_lanes is None else f' + {stem_lanes} stem lanes'} do not fit "
                  f"{board['name']}'s budget by the sizing model ({built.memory_text()}, "
                  f"{built.lut} LUTs); generating them as asked", file=sys.stderr)
        chosen = {"board": board["name"],
                  "fastest_fitting_lanes": None if best is None else best.lanes,
                  "fastest_fitting_stem_lanes": None if best is None else best.stem_lanes,
                  "ranked_by": ("dense events" if pace is None else
                                f"cycles on the export's {pace.images} golden-vector images"),
                  "estimate": built.as_dict()}
    ddr = axi if args.weights == "ddr" else None
    stream, chunk_major = bool(stream_weights), bool(stem_chunk_major)
    tile_words = tile_words if stream else None
    stream_ddr = bool(stream_ddr) and stream
    if stream_ddr and export.arch.get("stem") and not chunk_major:
        raise StepvitError("--stream-ddr: a stem design keeps the one stream buffer that DDR "
                           "replaces only when its stem runs chunk by chunk; add "
                           "--stem-chunk-major")
    stem_maps_ddr = bool(stem_maps_ddr) and stream_ddr
    if stem_maps_ddr and not (export.arch.get("stem") and chunk_major):
        raise StepvitError("--stem-maps-ddr: only a convolutional stem that runs chunk by "
                           "chunk writes its maps a chunk at a time into DDR; add "
                           "--stem-chunk-major (to an export with a stem)")
    check_spike_word_bits(export, lanes, spike_word_bits)
    # the memories the sizing placed in UltraRAM or LUTs (rtl/ram_style.py)
    ram_styles = built.ram_styles if chosen is not None else {}
    report = generate(export, build, lanes=lanes, stem_lanes=stem_lanes,
                      stem_chunk_major=chunk_major, weights=args.weights, widths=widths,
                      stream_weights=stream, tile_words=tile_words,
                      spike_word_bits=spike_word_bits, stream_ddr=stream_ddr,
                      ram_styles=ram_styles, stem_maps_ddr=stem_maps_ddr, **(ddr or {}))
    record_design(build, export, lanes, None if chosen is None else chosen["board"],
                  stem_lanes=stem_lanes, ddr=ddr, widths=widths, stream_weights=stream,
                  tile_words=tile_words, stem_chunk_major=chunk_major,
                  spike_word_bits=spike_word_bits, stream_ddr=stream_ddr,
                  stem_maps_ddr=stem_maps_ddr)
    copy = None
    if ddr is not None:
        copy = copy_export_image(export, build, lanes=lanes, data_width=ddr["data_width"],
                                 widths=widths, stem_lanes=stem_lanes,
                                 stem_chunk_major=chunk_major)
    summary = {key: report[key] for key in
               ("name", "config_hash", "lanes", "stem_lanes", "image_words", "packet_words",
                "memory_bits")}
    if chunk_major:
        summary["stem_chunk_major"] = True
    if spike_word_bits is not None:
        summary["spike_word_bits"] = spike_word_bits
    summary.update(placement_lists(ram_styles))
    if args.weights == "ddr":
        summary.update(weights="ddr", shape_hash=report["shape_hash"], bit_widths=widths,
                       weight_image=report["weight_image"]["file"],
                       weight_image_checksum=report["weight_image"]["checksum"],
                       export_weight_image=str(copy))
        if stream:
            summary["weight_tiles"] = report["weight_tiles"]
        if stream_ddr:
            summary["activations"] = report["activations"]
    if chosen is not None:
        summary["sizing"] = chosen
    print(json.dumps({"verilog": f"{build}/{VERILOG_FILE}", **summary}, indent=2))
    return 0


def ddr_design_to_reuse(build: Path, export: Export, lanes: int | None,
                        axi: dict[str, int], widths: dict[str, int] | None = None,
                        stream_weights: bool | None = None,
                        stem_chunk_major: bool | None = None,
                        spike_word_bits: int | None = None,
                        stream_ddr: bool | None = None,
                        stem_maps_ddr: bool | None = None
                        ) -> tuple[dict[str, Any], bool] | None:
    """Return the ddr design in ``build`` that ``export`` reuses, and whether it is stale.

    ``None``: no ddr design to keep (generate as asked). Stale: new generator code since,
    or its files gone; the caller generates it again with the record's choices (lanes,
    widths, streaming, tiles, the stem's lanes and schedule) where no option overrides
    them, rather than the options' defaults.

    A folder holding a ddr design of another shape, or of widths ``export``'s do not fit
    in, is refused; one of ``export``'s shape is reused (its Verilog serves every export
    of the shape whose widths fit) when its lanes, AXI figures and widths (``widths``, the
    ones ``--width-margin`` asks for; ``None``: not asked, any that fit), its streaming
    of the weights (``stream_weights``; ``None``: not asked, either) and its stem's schedule
    (``stem_chunk_major``; ``None``: not asked, the held one) and its spike maps' widest
    word (``spike_word_bits``; ``None``: not asked, the held one) and where its stream is
    (``stream_ddr``; ``None``: not asked, the held one) and its stem's maps
    (``stem_maps_ddr``, likewise) are those asked for and the generator has not changed
    since.

    Raises
    ------
    StepvitError
        One line: another shape (both shape hashes), widths that do not fit, or
        ``--lanes``, the board's AXI figures, ``--width-margin``'s widths, a
        ``--stream-weights``/``--stem-chunk-major`` the held design has not or a
        ``--spike-word-bits`` other than its own.
    """
    from stepvit.rtl.build_folder import (
        DESIGN_FILE,
        generated_current,
        held_design,
        read_design,
    )
    from stepvit.rtl.generate import REPORT_FILE, VERILOG_FILE

    if not (build / DESIGN_FILE).is_file():
        return None
    design = read_design(build)
    if design.get("weights") != "ddr":
        return None
    held_design(build, export, lanes)  # the shape and the widths, then --lanes
    held = f"{build} holds a {design['lanes']}-lane ddr design of shape {design['shape_hash']}"
    if widths is not None and design.get("bit_widths") != widths:
        raise StepvitError(f"{held} at bit widths {design.get('bit_widths')}; --width-margin "
                           f"asks for {widths} (drop --width-margin or use another --build)")
    if stream_weights and not design.get("stream_weights"):
        raise StepvitError(f"{held} that holds its weights on chip; --stream-weights asks for "
                           f"one that streams them (use another --build)")
    if stream_ddr and not design.get("stream_ddr"):
        raise StepvitError(f"{held} that keeps its residual stream on chip; --stream-ddr "
                           f"asks for one that keeps it in DDR (use another --build)")
    if stem_maps_ddr and not design.get("stem_maps_ddr"):
        raise StepvitError(f"{held} that keeps its stem's maps on chip; --stem-maps-ddr asks "
                           f"for one that keeps them in DDR (use another --build)")
    if stem_chunk_major and not design.get("stem_chunk_major"):
        raise StepvitError(f"{held} whose stem runs step by step; --stem-chunk-major asks for "
                           f"one that runs chunk by chunk (use another --build)")
    held_words = design.get("spike_word_bits")
    if spike_word_bits is not None and held_words != spike_word_bits:
        words = ("one word a token" if held_words is None
                 else f"words of at most {held_words} bits")
        raise StepvitError(f"{held} whose spike maps hold {words}; --spike-word-bits "
                           f"{spike_word_bits} asks for words of at most {spike_word_bits} "
                           f"bits (drop --spike-word-bits or use another --build)")
    figures = {key: design.get(key) for key in axi}
    if figures != axi:
        raise StepvitError(f"{held} with an AXI master of {figures['data_width']} bits, bursts "
                           f"of {figures['max_burst']}; --board asks for {axi['data_width']} "
                           f"and {axi['max_burst']} (use another --build)")
    return design, not generated_current(build, design, (VERILOG_FILE, REPORT_FILE))


def _reuse_ddr_build(build: Path, export: Export, design: dict[str, Any]) -> int:
    """Point ``build``'s ddr design at ``export``: its image, report and record."""
    from stepvit.rtl.build_folder import record_design
    from stepvit.rtl.generate import VERILOG_FILE, copy_export_image, reuse_ddr_build

    lanes, data_width = int(design["lanes"]), int(design["data_width"])
    widths = {key: int(value) for key, value in design["bit_widths"].items()}
    stem_lanes = design.get("stem_lanes")  # recorded only where they differ from the lanes
    chunk_major = bool(design.get("stem_chunk_major"))
    report = reuse_ddr_build(export, build, lanes=lanes, data_width=data_width, widths=widths,
                             stem_lanes=stem_lanes, stem_chunk_major=chunk_major)
    record_design(build, export, lanes, design.get("board"), stem_lanes,
                  ddr={"data_width": data_width, "max_burst": int(design["max_burst"])},
                  widths=widths, stream_weights=bool(design.get("stream_weights")),
                  tile_words=design.get("tile_words"), stem_chunk_major=chunk_major,
                  spike_word_bits=design.get("spike_word_bits"),
                  stream_ddr=bool(design.get("stream_ddr")),
                  stem_maps_ddr=bool(design.get("stem_maps_ddr")))
    copy = copy_export_image(export, build, lanes=lanes, data_width=data_width, widths=widths,
                             stem_lanes=stem_lanes, stem_chunk_major=chunk_major)
    print(json.dumps({"verilog": f"{build}/{VERILOG_FILE}", "reused": True,
                      "name": report["name"], "config_hash": report["config_hash"],
                      "lanes": lanes, "weights": "ddr", "shape_hash": design["shape_hash"],
                      "bit_widths": widths,
                      "weight_image": report["weight_image"]["file"],
                      "weight_image_checksum": report["weight_image"]["checksum"],
                      "export_weight_image": str(copy)}, indent=2))
    return 0


def synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``stepvit synth``."""
    parser.add_argument("build", metavar="BUILD", help="build folder written by `stepvit rtl`")
    parser.add_argument("--board", default=None,
                        help=f"pynq-z2, kv260, zcu104 or a board folder (default: the one the "
                             f"design was sized for, else {DEFAULT_BOARD})")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="longest Yosys may run, in seconds (default 3600)")
    add_progress_argument(parser)


def synth(args: argparse.Namespace) -> int:
    """Run Yosys on a generated design and print its resources against the board."""
    from stepvit.rtl.build_folder import board_for
    from stepvit.rtl.synth import format_table, synthesize

    input_folder(args.build, "BUILD")
    board = board_for(args.board, args.build)
    if not args.no_progress:
        print(f"synth: Yosys on {args.build} for {board} (minutes for a large design)",
              file=sys.stderr, flush=True)
    report = synthesize(args.build, board, timeout_s=args.timeout)
    print(format_table(report))
    print(f"report: {args.build}/synth_{report['board']}.json")
    return 0
