"""The ``stepvit rtl`` and ``stepvit synth`` commands.

Only argparse and the standard library at the top: amaranth is imported inside the
commands, so that ``stepvit --help`` runs where it is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys

from stepvit.model.export.errors import StepvitError
from stepvit.model.export.options import (
    add_build_argument,
    add_progress_argument,
    input_folder,
    output_folder,
)

DEFAULT_LANES = 8


def rtl_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``stepvit rtl``."""
    parser.add_argument("export", help="export directory (manifest.yaml + weights.npz)")
    add_build_argument(parser, "build folder for stepvit_accel.v and report.json",
                       required=True, old_spellings=("--out",))
    parser.add_argument("--lanes", type=int, default=DEFAULT_LANES,
                        help=f"parallel accumulator lanes (default {DEFAULT_LANES})")


def rtl(args: argparse.Namespace) -> int:
    """Generate ``stepvit_accel.v`` and ``report.json`` for an export."""
    if args.lanes < 1:
        raise StepvitError(f"--lanes must be at least 1, got {args.lanes}")
    from stepvit.model.export import load_export
    from stepvit.rtl.generate import VERILOG_FILE, generate

    export = load_export(args.export)
    build = output_folder(args.build, "--build")
    report = generate(export, build, lanes=args.lanes)
    summary = {key: report[key] for key in
               ("name", "config_hash", "lanes", "image_words", "packet_words", "memory_bits")}
    print(json.dumps({"verilog": f"{build}/{VERILOG_FILE}", **summary}, indent=2))
    return 0


def synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``stepvit synth``."""
    parser.add_argument("build", metavar="BUILD", help="build folder written by `stepvit rtl`")
    parser.add_argument("--board", default="pynq-z2",
                        help="pynq-z2, kv260, zcu104 or a board folder (default pynq-z2)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="longest Yosys may run, in seconds (default 3600)")
    add_progress_argument(parser)


def synth(args: argparse.Namespace) -> int:
    """Run Yosys on a generated design and print its resources against the board."""
    from stepvit.rtl.synth import format_table, synthesize

    input_folder(args.build, "BUILD")
    if not args.no_progress:
        print(f"synth: Yosys on {args.build} for {args.board} (minutes for a large design)",
              file=sys.stderr, flush=True)
    report = synthesize(args.build, args.board, timeout_s=args.timeout)
    print(format_table(report))
    print(f"report: {args.build}/synth_{report['board']}.json")
    return 0
