"""The host's commands: ``bench`` (any backend), ``run`` (a board, checked) and ``overlay``.

Only argparse and the standard library are imported at the top; numpy, the export
reader and the backends come in inside the commands, so ``stepvit --help`` stays cheap
and the board commands run on a board's Python (numpy + pyyaml + pynq).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stepvit.model.export.options import (
    add_budget_argument,
    add_build_argument,
    add_progress_argument,
    image_count,
    input_folder,
    output_folder,
)
from stepvit.rtl.boards import DEFAULT_BOARD
from stepvit.rtl.build_folder import (
    DEFAULT_LANES,
    add_lanes_argument,
    check_lanes,
    stem_lanes_of,
)
from stepvit.sim.commands import SIMULATORS

#: Images the bench streams per budget unless told otherwise.
DEFAULT_BENCH_IMAGES = 32

#: Seed of the stand-in images for an untrained export (it has no data set).
RANDOM_IMAGE_SEED = 0


def _bench_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export", type=Path, help="export directory (manifest.yaml, weights.npz)")
    add_budget_argument(parser)
    parser.add_argument("--images", type=image_count, default=DEFAULT_BENCH_IMAGES,
                        help=f"test images streamed per budget, or 'all' for every one "
                             f"(default {DEFAULT_BENCH_IMAGES})")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for bench.json and bench.png (default: beside the export)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="pynq: seconds one batch's DMA transfers may take (default 5)")
    parser.add_argument("--dma-batch", type=int, default=64,
                        help="pynq: images per DMA transfer, one MM2S and one S2MM transfer "
                             "a batch (default 64; 1: one image at a time)")
    add_progress_argument(parser)


def bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``."""
    _bench_common_arguments(parser)
    parser.add_argument("--backend", choices=("sim", "golden", "pynq"), default="sim",
                        help="what runs the images (default: sim, the Verilog under "
                             "--simulator)")
    parser.add_argument("--simulator", choices=SIMULATORS, default=SIMULATORS[0],
                        help="sim: verilator (default, the C++ bulk path) or icarus (cocotb)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="sim with verilator: threads, one model each (default 1)")
    add_lanes_argument(parser, what="sim: accumulator lanes of the generated design")
    parser.add_argument("--board", default=None,
                        help=f"board whose clock turns cycles into µs (default: the one the "
                             f"--build folder's design was sized for, else {DEFAULT_BOARD})")
    parser.add_argument("--overlay", type=Path, default=None,
                        help="pynq: folder with stepvit.bit and stepvit.hwh")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="data folder for CIFAR test splits (default ./data)")
    add_build_argument(parser, "sim: build folder, the design `stepvit rtl` recorded there or "
                               "a new one (default build/sim/<hash>-lanes<P>)",
                       old_spellings=("--build-dir",))


def run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``run`` options to ``parser``."""
    parser.add_argument("--board", required=True, help="the board this runs on (pynq-z2, ...)")
    parser.add_argument("--overlay", type=Path, default=None,
                        help="folder with stepvit.bit and stepvit.hwh (from `stepvit overlay`); "
                             "with --emulate, a folder `stepvit overlay` wrote (its Verilog)")
    parser.add_argument("--emulate", action="store_true",
                        help="a virtual board: this driver against the Verilated RTL "
                             "(default overlay: the export's own design)")
    add_lanes_argument(parser, str(DEFAULT_LANES),
                       what="--emulate: accumulator lanes of the export's design")
    _bench_common_arguments(parser)


def overlay_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``overlay`` options to ``parser``."""
    parser.add_argument("export", type=Path, help="export directory")
    parser.add_argument("--board", default=None,
                        help="board to build for (pynq-z2, kv260, ...; default: the one the "
                             "--build folder's lanes were picked for)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the Verilog, the Vivado Tcl and the overlay")
    add_build_argument(parser, "a folder `stepvit rtl` wrote: its design (lanes, board)")
    add_lanes_argument(parser, what="accumulator lanes of the generated design")


def _default_out(export_path: Path, backend: str) -> Path:
    return export_path.resolve().parent / f"bench-{backend}"


def _out_folder(args: argparse.Namespace, backend: str) -> Path:
    """Return the bench's ``--out`` folder (or its default), created and writable."""
    return output_folder(args.out or _default_out(args.export, backend), "--out")


def _progress(args: argparse.Namespace) -> Any:
    """Return the progress printer of a bench, or ``None`` with ``--no-progress``."""
    from stepvit.host.bench import print_progress

    return None if args.no_progress else print_progress


def _test_split(export: Any, data_dir: Path) -> tuple[Any, Any] | None:
    """Return the export's test split as numpy arrays, or ``None`` for an untrained export."""
    import numpy as np

    dataset = export.manifest["accuracy"]["dataset"]
    if dataset is None:
        return None
    from stepvit.model.data import load_dataset

    images, labels, _ = load_dataset(dataset, data_dir, "test")
    return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def _random_images(export: Any, count: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(RANDOM_IMAGE_SEED)
    return rng.integers(0, 256, size=(count, *export.arch["image_shape"]), dtype=np.uint8)


def bench(args: argparse.Namespace) -> int:
    """Benchmark an export per time-step budget on a backend; exit 1 on a golden mismatch."""
    from stepvit.model.export.errors import StepvitError

    if args.images is not None and args.images < 1:
        raise StepvitError(f"--images must be at least 1, got {args.images}")
    if args.jobs < 1:
        raise StepvitError(f"--jobs must be at least 1, got {args.jobs}")
    if args.backend == "pynq":
        if args.overlay is None:
            raise StepvitError("the pynq backend needs --overlay DIR (stepvit.bit, stepvit.hwh)")
        return _board_bench(args, args.board or DEFAULT_BOARD, args.overlay,
                            backend_label="pynq")
    return _host_bench(args)


def _host_bench(args: argparse.Namespace) -> int:
    """Bench the sim or golden backend against the golden model on the test split."""
    from stepvit.host.accelerator import open_accelerator
    from stepvit.host.bench import GoldenReference, format_table, run_bench
    from stepvit.model.export import load_export, parse_budgets
    from stepvit.model.export.errors import StepvitError
    from stepvit.rtl.boards import load_board
    from stepvit.rtl.build_folder import board_for

    export = load_export(args.export)
    board = load_board(board_for(args.board, args.build))
    budgets = parse_budgets(args.budget, export.t_max)
    out = _out_folder(args, args.backend)
    if args.build is not None:
        output_folder(args.build, "--build")
    split = _test_split(export, args.data_dir)
    labels = None
    if split is None:
        if args.images is None:
            raise StepvitError("--images all: the export names no data set (an untrained "
                               "export); give a number of random images")
        images = _random_images(export, args.images)
        reference = GoldenReference(export)
        source = f"{args.images} random images (untrained export: no data set, no accuracy)"
    else:
        test_images, test_labels = split
        images, labels = test_images[:args.images], test_labels[:args.images]
        reference = GoldenReference(export, test_images, test_labels)
        source = (f"the first {len(images)} {export.manifest['accuracy']['dataset']} test "
                  f"images; accuracy on all {len(test_images)}")
    progress = _progress(args)
    if progress:
        progress(f"bench: {export.path} on {args.backend}, {source}")
    with open_accelerator(args.backend, export, lanes=args.lanes, build_dir=args.build,
                          simulator=args.simulator, jobs=args.jobs) as accel:
        lanes = accel.lanes if args.backend == "sim" else args.lanes or DEFAULT_LANES
        stem_lanes = stem_lanes_of(accel.build_dir) if args.backend == "sim" else None
        rows = run_bench(accel, images, budgets, reference, clock_mhz=board.clock_mhz,
                         lanes=lanes, labels=labels, progress=progress, stem_lanes=stem_lanes)
    report = _report(export, args.backend, board, lanes, source, rows)
    return _finish(report, format_table(rows), out)


def _board_bench(args: argparse.Namespace, board_name: str, overlay: Path,
                 backend_label: str) -> int:
    """Bench the pynq backend against the export's golden vectors."""
    from stepvit.host.accelerator import open_accelerator
    from stepvit.host.bench import VectorsReference, format_table, run_bench
    from stepvit.model.export import load_export, parse_budgets
    from stepvit.model.export.vectors import load_golden_vectors
    from stepvit.rtl.boards import load_board

    input_folder(overlay, "--overlay")
    export = load_export(args.export)
    board = load_board(board_name)
    budgets = parse_budgets(args.budget, export.t_max)
    out = _out_folder(args, "pynq")
    vectors = load_golden_vectors(export)
    images, labels = vectors.images[:args.images], vectors.labels[:args.images]
    reference = VectorsReference(vectors, export)
    source = f"the {len(images)} images of {export.path}/golden_vectors.npz"
    progress = _progress(args)
    if progress:
        progress(f"{backend_label}: {export.path} on {board.name}, {source}")
    with open_accelerator("pynq", export, overlay=overlay, timeout_s=args.timeout,
                          max_batch=args.dma_batch) as accel:
        lanes = accel.read_register("LANES")
        rows = run_bench(accel, images, budgets, reference, clock_mhz=board.clock_mhz,
                         lanes=lanes, labels=labels, progress=progress)
    report = _report(export, "pynq", board, lanes, source, rows)
    return _finish(report, format_table(rows), out)


def _report(export: Any, backend: str, board: Any, lanes: int | None, source: str,
            rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "export": str(export.path),
        "config_hash": f"{export.config_hash:08x}",
        "backend": backend,
        "board": board.name,
        "clock_mhz": board.clock_mhz,
        "lanes": lanes,
        "t_max": export.t_max,
        "images": source,
        "energy_model": "E = 4.6 pJ * mac_ops + 0.9 pJ * ac_ops (45 nm, Horowitz 2014): an "
                        "estimate",
        "rows": rows,
    }


def _finish(report: dict[str, Any], table: str, out_dir: Path) -> int:
    from stepvit.host.bench import write_report

    json_path, png_path = write_report(report, out_dir)
    print(table)
    print(f"\nreport: {json_path}" + (f"\nplot:   {png_path}" if png_path else ""))
    mismatches = sum(row["mismatches"] for row in report["rows"])
    if mismatches:
        print(f"{mismatches} image results differ from the golden model", file=sys.stderr)
        return 1
    if report["backend"] == "golden":
        return 0  # the golden model against itself: nothing was checked
    checked = sum(row["images"] for row in report["rows"])
    print(f"all {checked} results (images x budgets) match the golden model: logits, class "
          f"and every layer's spike count")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run an export on a board through its overlay, checked against the golden vectors."""
    from stepvit.model.export.errors import StepvitError

    if args.images is not None and args.images < 1:
        raise StepvitError(f"--images must be at least 1, got {args.images}")
    if args.emulate:
        return _virtual_board_run(args)
    if args.overlay is None:
        raise StepvitError("run needs --overlay DIR (stepvit.bit, stepvit.hwh), or --emulate")
    return _board_bench(args, args.board, args.overlay, backend_label="run")


def _virtual_board_run(args: argparse.Namespace) -> int:
    """``run --emulate``: the pynq driver, unchanged, against the Verilated RTL."""
    from stepvit.model.export import load_export
    from stepvit.rtl.build_folder import default_build_dir
    from stepvit.sim.pynq_emulation import copied_overlay, emulated_overlay, emulated_pynq

    export = load_export(args.export)
    build = Path("build") / "emulate"
    if args.overlay is None:
        check_lanes(args.lanes)
        lanes = args.lanes or DEFAULT_LANES
        overlay = emulated_overlay(export, default_build_dir(export, lanes, build), lanes=lanes)
    else:
        overlay = copied_overlay(args.overlay, build / f"overlay-{args.overlay.resolve().name}")
    with emulated_pynq(build):
        return _board_bench(args, args.board, overlay, backend_label="run (virtual board)")


def _reuse_generated(build: Path, export: Any, design: dict[str, Any],
                     out: Path) -> dict[str, Any] | None:
    """Copy ``build``'s generated files into ``out`` if ``overlay`` would generate them.

    Returns their report, else ``None`` (generate). They are when ``build`` holds them
    and its design record is of this export (config hash and weights) by this generator
    (the fingerprint of ``rtl/``): the overlay takes every other parameter from that
    record. A design of the export's shape generated from another export is generated
    again, and so is a report whose spike maps' words (``spike_word_bits``) are not the
    record's.
    """
    import shutil

    from stepvit.rtl.build_folder import generated_current
    from stepvit.rtl.generate import REPORT_FILE, RTLIL_FILE, VERILOG_FILE

    same = (design.get("config_hash") == f"{export.config_hash:08x}"
            and design.get("weights_sha256") == export.manifest.get("weights_sha256"))
    if not same or not generated_current(build, design, (VERILOG_FILE, REPORT_FILE)):
        return None
    report = json.loads((build / REPORT_FILE).read_text())
    if report.get("spike_word_bits") != design.get("spike_word_bits"):
        return None
    files = [VERILOG_FILE, REPORT_FILE, RTLIL_FILE]
    if report.get("weights") == "ddr":
        files.append(report["weight_image"]["file"])
    if build.resolve() != out.resolve():
        for name in files:
            if (build / name).is_file():
                shutil.copyfile(build / name, out / name)
    return report


def overlay(args: argparse.Namespace) -> int:
    """Lay out a board's Vivado project: the Verilog, the Tcl and what they were built from."""
    from stepvit.host.backend_pynq import OVERLAY_DESCRIPTION
    from stepvit.model.export import load_export
    from stepvit.model.export.errors import StepvitError
    from stepvit.rtl.boards import OVERLAY_TCL, lay_out_tcl, load_board
    from stepvit.rtl.build_folder import (
        export_image_name,
        held_design,
        image_stem_lanes,
        image_widths,
        record_design,
    )

    check_lanes(args.lanes)
    export = load_export(args.export)
    lanes, board_name, stem_lanes = args.lanes or DEFAULT_LANES, args.board, None
    chunk_major, spike_word_bits = False, None
    if args.build is not None:
        design = held_design(input_folder(args.build, "--build"), export, args.lanes)
        lanes, board_name = design["lanes"], args.board or design["board"]
        stem_lanes = design.get("stem_lanes")  # the build's stem engine, as sized
        chunk_major = bool(design.get("stem_chunk_major"))  # and as scheduled
        spike_word_bits = design.get("spike_word_bits")  # and its spike maps' words
    if board_name is None:
        raise StepvitError("overlay needs --board NAME (pynq-z2, kv260, ...) or a --build "
                           "folder whose design names its board")
    board = load_board(board_name)
    try:
        from stepvit.rtl.generate import generate
    except ImportError as error:
        raise StepvitError(f"the Verilog generator needs the hw extras ({error})") from None
    ddr, widths = None, None
    if args.build is not None and design.get("weights") == "ddr":
        # One bitstream per shape: the overlay serves every export of the build's shape.
        figures = board.memory()
        ddr = {"data_width": figures.data_width, "max_burst": figures.max_burst}
        held = {key: design.get(key) for key in ddr}
        if held != ddr:
            raise StepvitError(f"{args.build} holds a ddr design with a {held['data_width']}-bit "
                               f"AXI master (bursts of {held['max_burst']}); {board.name} has "
                               f"{ddr['data_width']} and {ddr['max_burst']}: build it with "
                               f"`stepvit rtl EXPORT --weights ddr --board {board.name}`")
        widths = {key: int(value) for key, value in design["bit_widths"].items()}
    stream = ddr is not None and bool(design.get("stream_weights"))
    stream_ddr = stream and bool(design.get("stream_ddr"))
    stem_maps_ddr = stream_ddr and bool(design.get("stem_maps_ddr"))
    out = output_folder(args.out, "--out")
    rtl_report = (None if args.build is None
                  else _reuse_generated(Path(args.build), export, design, out))
    if rtl_report is not None:
        print(f"{out}: the Verilog of {args.build} (its design, this export, this generator)",
              file=sys.stderr)
    elif ddr is None:
        rtl_report = generate(export, out, lanes=lanes, stem_lanes=stem_lanes,
                              stem_chunk_major=chunk_major, spike_word_bits=spike_word_bits)
    else:
        rtl_report = generate(export, out, lanes=lanes, stem_lanes=stem_lanes,
                              stem_chunk_major=chunk_major, weights="ddr",
                              widths=widths, stream_weights=stream,
                              tile_words=design.get("tile_words") if stream else None,
                              spike_word_bits=spike_word_bits, stream_ddr=stream_ddr,
                              stem_maps_ddr=stem_maps_ddr, **ddr)
    if ddr is not None:
        from stepvit.rtl.generate import copy_export_image

        copy_export_image(export, out, lanes=lanes, data_width=ddr["data_width"], widths=widths,
                          stem_lanes=stem_lanes, stem_chunk_major=chunk_major)
    written = lay_out_tcl(board, out)
    record_design(out, export, lanes, board.name, stem_lanes, ddr=ddr, widths=widths,
                  stream_weights=stream,
                  tile_words=design.get("tile_words") if stream else None,
                  stem_chunk_major=chunk_major, spike_word_bits=spike_word_bits,
                  stream_ddr=stream_ddr, stem_maps_ddr=stem_maps_ddr)
    info = {
        "board": board.name,
        "part": board.part,
        "clock_mhz": board.clock_mhz,
        "export": str(export.path.resolve()),
        "config_hash": f"{export.config_hash:08x}",
        "lanes": lanes,
        "verilog": "stepvit_accel.v",
        "weights": "rom" if ddr is None else "ddr",
        "rtl_report": rtl_report,
    }
    image_stem = image_stem_lanes(export.arch, lanes, stem_lanes)
    if image_stem is not None:
        info["stem_lanes"] = image_stem  # the stem engine's lanes (a design with a stem)
    if chunk_major:
        info["stem_chunk_major"] = True
    if spike_word_bits is not None:
        info["spike_word_bits"] = spike_word_bits
    if ddr is not None:
        # the image's name and size: the driver refuses a file of another design's layout
        info.update(shape_hash=f"{export.shape_hash:08x}", data_width=ddr["data_width"],
                    bit_widths=widths, stream_weights=stream, stream_ddr=stream_ddr,
                    **({"stem_maps_ddr": True} if stem_maps_ddr else {}),
                    weight_image=export_image_name(lanes, ddr["data_width"],
                                                   image_widths(export.bit_widths, widths),
                                                   chunk_major, stem_lanes=image_stem),
                    weight_image_bytes=int(rtl_report["weight_image"]["bytes"]))
    (out / OVERLAY_DESCRIPTION).write_text(json.dumps(info, indent=2, default=str) + "\n")
    if ddr is None:
        print(f"{out}: stepvit_accel.v, {', '.join(written)}, design.json, overlay.json "
              f"(config hash {export.config_hash:08x}, {lanes} lanes)")
    else:
        print(f"{out}: stepvit_accel.v, {', '.join(written)}, design.json, overlay.json (a ddr "
              f"overlay of shape hash {export.shape_hash:08x}, {lanes} lanes: every export of "
              f"the shape runs on it with its {info['weight_image']} beside it)")
    print("where Vivado is installed, build stepvit.bit and stepvit.hwh with:")
    print(f"  cd {out} && vivado -mode batch -source {OVERLAY_TCL}")
    files = "stepvit.bit and stepvit.hwh" if ddr is None else (
        "stepvit.bit, stepvit.hwh and overlay.json")
    print(f"then copy {files} (into a folder {out.name}) and the export to "
          f"the board and run, in a root login shell (`sudo -i`; plain sudo drops XILINX_XRT):")
    print(f"  stepvit run --board {board.name} EXPORT --overlay {out.name}")
    return 0
