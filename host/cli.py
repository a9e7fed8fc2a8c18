"""The ``stepvit`` command line: one subcommand per pipeline step.

Each step reads and writes files, so any step can be rerun alone. The subcommands live
in the part that owns them (``model``, ``rtl``, ``sim``, ``host``); their modules import
argparse only at the top, and torch, amaranth or cocotb inside the command itself, so
that ``stepvit --help`` and the board commands run on a board's Python.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stepvit.model.export.errors import StepvitError

# name -> (module that owns it, one-line help). The module defines
# ``<name>_arguments(parser)`` and ``<name>(args) -> int`` (``-`` in a name is ``_`` there).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("stepvit.model.commands", "train the masked-timestep spiking ViT"),
    "export": ("stepvit.model.commands", "quantize a run and write its export directory"),
    "eval": ("stepvit.model.commands", "integer golden accuracy and work of an export"),
    "random-export": ("stepvit.model.commands", "an untrained export of a config, for sizing"),
    "sweep": ("stepvit.model.sweep", "learned time-step masks against fixed T, measured"),
    "rtl": ("stepvit.rtl.commands", "generate the accelerator's Verilog from an export"),
    "synth": ("stepvit.rtl.commands", "Yosys resource report of a generated design"),
    "sim": ("stepvit.sim.commands", "simulate the Verilog against the golden model"),
    "bench": ("stepvit.host.commands", "latency and accuracy per time-step budget"),
    "overlay": ("stepvit.host.commands", "lay out a board's Vivado project"),
    "run": ("stepvit.host.commands", "run an export on a board and check it"),
    "demo": ("stepvit.host.demo", "the whole chain on the default data set"),
}

#: The options every command spells alike (``stepvit --help`` ends with it; so does the README).
GRAMMAR = """\
options every command spells alike:
  --budget B     eval, sim, bench, run: a budget B, a list B1,B2, a range A-B, or all
                 (alias --budgets). Default: all, every budget 1..t_max; budget t_max is
                 the trained mask. A budget outside 1..t_max is refused.
  --build DIR    rtl, sim, bench, overlay, demo: the build folder (synth reads it as
                 BUILD). rtl records the design in DIR/design.json; sim, bench, synth and
                 overlay take it from there and refuse another --lanes or export.
  --out DIR      always a folder: train, export, random-export, sim, bench, run, overlay.
  --no-progress  train, export, eval, sim, bench, run, synth, demo: no progress output
                 (off a terminal a bar writes one plain line every 30 s).
A bad value, or a path that cannot be read or written, ends in one line
`stepvit COMMAND: error: ...` and exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every subcommand that its module provides."""
    parser = argparse.ArgumentParser(
        prog="stepvit",
        description="Train spiking ViTs that learn their time steps; run them on an FPGA.",
        epilog=GRAMMAR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # that part has not been built yet: absent rather than faked
        function_name = name.replace("-", "_")
        add_arguments = getattr(module, f"{function_name}_arguments", None)
        command = getattr(module, function_name, None)
        if add_arguments is None or command is None:
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(func=command)
    return parser


def _user_paths(args: argparse.Namespace) -> list[Path]:
    """Return the paths among the command's arguments, absolute (the folder itself excluded)."""
    here = Path.cwd()
    paths = []
    for name, value in vars(args).items():
        if name not in ("command", "func") and isinstance(value, (str, Path)) and str(value):
            path = Path(os.path.abspath(value))
            if path not in (here, Path(path.anchor)):
                paths.append(path)
    return paths


def _user_path_error(error: OSError, args: argparse.Namespace) -> str | None:
    """Return one line for an ``error`` on a path the user gave (or inside one), else ``None``.

    An OSError on any other file is a bug and keeps its traceback.
    """
    paths = _user_paths(args)
    for filename in (error.filename, error.filename2):
        if filename is None:
            continue
        target = Path(os.path.abspath(os.fsdecode(filename)))
        if any(target == path or path in target.parents for path in paths):
            return f"{os.fsdecode(filename)}: {error.strerror or error}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``stepvit`` subcommand and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StepvitError as error:
        print(f"stepvit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        line = _user_path_error(error, args)
        if line is None:
            raise
        print(f"stepvit {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stepvit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
