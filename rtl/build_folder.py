"""What a build folder holds: ``design.json``, the record of the design built in it.

``stepvit rtl`` writes the record (the export's config hash and weights checksum, the
lanes, the board the lanes were picked for, the generator's fingerprint); ``sim``,
``bench``, ``synth`` and ``overlay`` read it when given ``--build DIR``, take the design
from it, and refuse a conflicting ``--lanes`` or another export in one line. A folder that
holds nothing yet becomes the design's; a folder with files but no record (written before
folders recorded their design) is refused. The standard library and ``rtl/boards.py``
only: a board's Python imports it too.

A ``weights="ddr"`` design is keyed by the export's *shape hash*, not its config hash: its
Verilog serves every export of that shape, so the record says ``weights: ddr`` with the
shape hash, the AXI read master's data width and burst and the design's bit widths, and
any export of the shape whose widths fit in the design's is the folder's
(:func:`held_design`). Each export's weight image for such a design lives in
the export's own folder, named by the layout it was packed for
(:func:`export_image_path`): that is the file the host loads on a board.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepvit.model.export.errors import StepvitError
from stepvit.rtl.boards import DEFAULT_BOARD

if TYPE_CHECKING:
    from stepvit.model.export import Export

#: Accumulator lanes of a design when neither ``--lanes`` nor a build folder says.
DEFAULT_LANES = 8
#: The record's file name in a build folder.
DESIGN_FILE = "design.json"
#: Where a design is built when no ``--build`` is given (``sim``, ``bench``).
SIM_BUILDS = Path("build") / "sim"


def image_widths(export_widths: dict[str, int],
                 widths: dict[str, int] | None) -> dict[str, int] | None:
    """Return a design's ``widths`` where they are not the export's, else ``None``.

    What names an export's image besides its layout (:func:`export_image_name`).
    """
    return None if widths is None or dict(widths) == dict(export_widths) else dict(widths)


def image_stem_lanes(arch: dict[str, Any], lanes: int, stem_lanes: int | None) -> int | None:
    """Return the stem lanes that name an export's image (``None``: no convolutional stem).

    ``arch``: the export's architecture (``Export.arch``); ``stem_lanes``: the design's
    stem lanes as a design record holds them (``None``: the core's ``lanes``, see
    :func:`stem_lanes_of`). An export with a stem gets its stem engine's lanes, ``stem_lanes``
    or else ``lanes``; one without a stem gets ``None``, so its image keeps its name.
    """
    return (stem_lanes or lanes) if arch.get("stem") else None


def export_image_name(lanes: int, data_width: int, widths: dict[str, int] | None = None,
                      stem_chunk_major: bool = False, *,
                      stem_lanes: int | None = None) -> str:
    """Return the file name of an export's weight image for a ddr design's layout.

    The image's bytes depend on the export, the lanes (the memories' widths and depths),
    the stem engine's lanes (its parameter memories are laid out a stem lane a bit field),
    the AXI data width (the beats), the design's bit widths and the stem's schedule (a
    chunk-major stem's tap words are in another order): the name carries the lanes, given
    ``stem_lanes`` (a design with a convolutional stem: :func:`image_stem_lanes`; ``None``,
    no stem, names none) ``-stem<S>``, the data width, given ``widths`` (a design's widths
    other than the export's: see :func:`image_widths`) those widths in key order, and
    ``-chunkmajor`` for a chunk-major stem (``stem_chunk_major``), so an image packed for
    another design's layout is never taken for this one's.
    """
    stem = "" if stem_lanes is None else f"-stem{stem_lanes}"
    tag = "" if widths is None else "-bits" + ".".join(
        f"{key}{widths[key]}" for key in sorted(widths) if key != "weight")
    schedule = "-chunkmajor" if stem_chunk_major else ""
    return f"weights-lanes{lanes}{stem}-axi{data_width}{tag}{schedule}.img"


def export_image_path(export_dir: str | Path, lanes: int, data_width: int,
                      widths: dict[str, int] | None = None,
                      stem_chunk_major: bool = False, *,
                      stem_lanes: int | None = None) -> Path:
    """Return where an export's image for a ddr design's layout lives.

    ``stepvit rtl --weights ddr`` writes it there and the host reads it from there:
    ``EXPORT/weights-lanes<P>[-stem<S>]-axi<W>.img`` (``-stem<S>``, the stem engine's
    lanes, for a design with a convolutional stem; ``-bits...`` for a design whose widths
    are not the export's, ``-chunkmajor`` for a chunk-major stem).
    """
    return Path(export_dir) / export_image_name(lanes, data_width, widths, stem_chunk_major,
                                                stem_lanes=stem_lanes)


def generator_fingerprint() -> str:
    """Return a hash of the generator's sources (``rtl/*.py``): new code, new Verilog."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def generated_current(folder: str | Path, design: dict[str, Any],
                      files: tuple[str, ...]) -> bool:
    """Return whether ``folder`` holds ``files`` as this generator writes ``design``.

    The design record's generator fingerprint is this code's and every file is there
    (``files``: the generator's outputs a reuse needs; :mod:`stepvit.rtl.generate` names
    them, and this module imports no generator).
    """
    return (design.get("generator") == generator_fingerprint()
            and all((Path(folder) / name).is_file() for name in files))


def default_build_dir(export: Export, lanes: int, under: Path = SIM_BUILDS) -> Path:
    """Return the folder of a design by default: ``under/<config hash>-lanes<P>``."""
    return under / f"{export.config_hash:08x}-lanes{lanes}"


def check_lanes(lanes: int | None, option: str = "--lanes") -> None:
    """Refuse a lane count below one (``None``, not given, passes)."""
    if lanes is not None and lanes < 1:
        raise StepvitError(f"{option} must be at least 1, got {lanes}")


def add_lanes_argument(parser: argparse.ArgumentParser,
                       default: str = f"the --build folder's design, else {DEFAULT_LANES}",
                       what: str = "parallel accumulator lanes") -> None:
    """Add ``--lanes P``; not given, it is ``None`` and ``default`` says what stands in."""
    parser.add_argument("--lanes", type=int, default=None, metavar="P",
                        help=f"{what} (default: {default})")


def design_of(export: Export, lanes: int, board: str | None = None,
              stem_lanes: int | None = None, *, ddr: dict[str, int] | None = None,
              widths: dict[str, int] | None = None,
              stream_weights: bool = False, tile_words: int | None = None,
              stem_chunk_major: bool = False,
              spike_word_bits: int | None = None,
              stream_ddr: bool = False, stem_maps_ddr: bool = False) -> dict[str, Any]:
    """Return the record of ``export``'s design at ``lanes`` (``board``: what picked them).

    ``stem_lanes``: the stem engine's lanes, recorded only where they differ from ``lanes``;
    ``stem_chunk_major``: the stem runs chunk-major (recorded as ``stem_chunk_major:
    true``, only then); ``spike_word_bits``: the widest word of the core's spike maps
    (recorded where given; ``None``, one word a token, records nothing).
    ``ddr``: a ``weights="ddr"`` design's AXI figures (``data_width``, ``max_burst``); the
    record then also says ``weights: ddr``, the shape hash and the design's bit ``widths``
    (default the export's); ``stream_weights``: the core streams its weights during
    compute (recorded as ``stream_weights: true``, only then), ``tile_words`` the most
    words of its tiles (recorded where given), ``stream_ddr``: its residual stream is in
    DDR (recorded as ``stream_ddr: true``, only then), ``stem_maps_ddr``: its stem's maps
    too (``stem_maps_ddr: true``, only then).
    """
    design = {
        "config_hash": f"{export.config_hash:08x}",
        "weights_sha256": export.manifest.get("weights_sha256"),
        "lanes": lanes,
        "board": board,
        "generator": generator_fingerprint(),
    }
    if export.arch.get("stem") and stem_lanes not in (None, lanes):
        design["stem_lanes"] = stem_lanes
    if stem_chunk_major:
        design["stem_chunk_major"] = True
    if spike_word_bits is not None:
        design["spike_word_bits"] = int(spike_word_bits)
    if ddr is not None:
        design.update(weights="ddr", shape_hash=f"{export.shape_hash:08x}",
                      data_width=int(ddr["data_width"]), max_burst=int(ddr["max_burst"]),
                      bit_widths=dict(widths or export.bit_widths))
        if stream_weights:
            design["stream_weights"] = True
            if tile_words is not None:
                design["tile_words"] = int(tile_words)
            if stream_ddr:
                design["stream_ddr"] = True
                if stem_maps_ddr:
                    design["stem_maps_ddr"] = True
    return design


def record_design(folder: str | Path, export: Export, lanes: int,
                  board: str | None = None, stem_lanes: int | None = None, *,
                  ddr: dict[str, int] | None = None,
                  widths: dict[str, int] | None = None,
                  stream_weights: bool = False,
                  tile_words: int | None = None,
                  stem_chunk_major: bool = False,
                  spike_word_bits: int | None = None,
                  stream_ddr: bool = False, stem_maps_ddr: bool = False) -> dict[str, Any]:
    """Write ``folder/design.json`` for ``export`` at ``lanes``; return the record.

    ``ddr``, ``widths``, ``stream_weights``, ``tile_words``: a ``weights="ddr"`` design's
    AXI figures, bit widths, whether it streams its weights and its tiles' most words;
    ``stem_chunk_major``: its stem's schedule; ``spike_word_bits``: its spike maps' widest
    word; ``stream_ddr``, ``stem_maps_ddr``: its residual stream and its stem's maps in DDR
    (see :func:`design_of`).
    """
    design = design_of(export, lanes, board, stem_lanes, ddr=ddr, widths=widths,
                       stream_weights=stream_weights, tile_words=tile_words,
                       stem_chunk_major=stem_chunk_major, spike_word_bits=spike_word_bits,
                       stream_ddr=stream_ddr, stem_maps_ddr=stem_maps_ddr)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DESIGN_FILE).write_text(json.dumps(design, indent=2) + "\n")
    return design


def read_design(folder: str | Path) -> dict[str, Any]:
    """Return the record of the design in ``folder``.

    Raises
    ------
    StepvitError
        If the folder has no record, or one that cannot be read.
    """
    path = Path(folder) / DESIGN_FILE
    if not path.is_file():
        raise StepvitError(f"{folder} holds no {DESIGN_FILE} (a build folder from before "
                           f"folders recorded their design, or not one): re-run `stepvit rtl "
                           f"EXPORT --build {folder}`")
    try:
        design = json.loads(path.read_text())
        int(design["lanes"]), str(design["config_hash"])
    except (ValueError, KeyError, TypeError) as error:
        raise StepvitError(f"{path}: not a design record ({error}): re-run `stepvit rtl "
                           f"EXPORT --build {folder}`") from None
    return design


def recorded(folder: str | Path, key: str) -> Any:
    """Return ``key`` of ``folder``'s design record (``None``: no record, or no such key)."""
    path = Path(folder) / DESIGN_FILE
    return read_design(folder).get(key) if path.is_file() else None


def stem_lanes_of(folder: str | Path) -> int | None:
    """Return the stem lanes ``folder``'s design records (``None``: the core's lanes)."""
    return recorded(folder, "stem_lanes")


def stem_chunk_major_of(folder: str | Path) -> bool:
    """Return whether ``folder``'s design records a chunk-major stem (no record: ``False``)."""
    return bool(recorded(folder, "stem_chunk_major"))


def spike_word_bits_of(folder: str | Path) -> int | None:
    """Return the spike maps' widest word ``folder``'s design records (``None``: one a token).

    No record, or a record that says none, is ``None`` (today's design).
    """
    bits = recorded(folder, "spike_word_bits")
    return None if bits is None else int(bits)


def board_for(board: str | None, folder: str | Path | None) -> str:
    """Return ``board`` if given, else the board ``folder``'s design was sized for, if any."""
    if board is not None:
        return board
    if folder is not None and (Path(folder) / DESIGN_FILE).is_file():
        board = read_design(folder).get("board")
    return board or DEFAULT_BOARD  # a design sized for no board: the default's clock


def held_design(folder: str | Path, export: Export, lanes: int | None) -> dict[str, Any]:
    """Return the record of the design in ``folder``, which must be ``export``'s at ``lanes``.

    Raises
    ------
    StepvitError
        One line: no record, or a ``--lanes`` (``None``: not given) or an export other than
        the folder's.
    """
    design = read_design(folder)
    held = f"{folder} holds a {design['lanes']}-lane design of export {design['config_hash']}"
    mine = design_of(export, design["lanes"])
    if design.get("weights") == "ddr":  # any export of the design's shape
        check_ddr_shape(folder, design, export)
        held = f"{folder} holds a {design['lanes']}-lane ddr design of shape {design['shape_hash']}"
    elif (design["config_hash"], design.get("weights_sha256")) != (mine["config_hash"],
                                                                   mine["weights_sha256"]):
        weights = "" if design["config_hash"] != mine["config_hash"] else " with other weights"
        raise StepvitError(f"{held}; {export.path} is export {mine['config_hash']}{weights} "
                           f"(use another --build)")
    if lanes is not None and lanes != design["lanes"]:
        raise StepvitError(f"{held}; --lanes {lanes} conflicts (drop --lanes or use another "
                           f"--build)")
    return design


def check_ddr_shape(folder: str | Path, design: dict[str, Any], export: Export) -> None:
    """Refuse ``export`` for the ddr design in ``folder`` unless it serves the export.

    The shape hashes must be equal and the export's bit widths must fit in the design's
    (``widths_fit`` of the contract; a record without widths has the export's shape's
    widths of before they were recorded, so it is refused for want of them).

    Raises
    ------
    StepvitError
        One line: the shape hashes differ, or the widths that do not fit.
    """
    from stepvit.model.export.reader import widths_fit

    mine = f"{export.shape_hash:08x}"
    if design.get("shape_hash") != mine:
        raise StepvitError(f"{folder} holds a ddr design of shape hash {design.get('shape_hash')}"
                           f"; {export.path} has shape hash {mine} (one bitstream per shape: "
                           f"use another --build for that shape)")
    beyond = widths_fit(export.bit_widths, design.get("bit_widths") or {})
    if beyond:
        raise StepvitError(f"{folder} holds a ddr design whose bit widths do not hold "
                           f"{export.path}'s: {', '.join(beyond)} (rebuild it with a larger "
                           f"--width-margin, or use another --build)")


def design_in(folder: str | Path, export: Export, lanes: int | None) -> dict[str, Any]:
    """Return the design a command builds or runs in ``folder``, recording it if new.

    A folder with a record gives the design (:func:`held_design`). A missing or empty
    folder becomes the design of ``export`` at ``lanes`` (:data:`DEFAULT_LANES` if
    ``None``); a folder with files but no record is refused.
    """
    folder = Path(folder)
    check_lanes(lanes)
    if not (folder / DESIGN_FILE).exists() and not (folder.is_dir() and any(folder.iterdir())):
        return record_design(folder, export, lanes or DEFAULT_LANES)
    design = held_design(folder, export, lanes)
    if design.get("weights") == "ddr":
        raise StepvitError(f"{folder} holds a ddr design (weights from DDR), which this command "
                           f"would overwrite with a rom one: use another --build (a ddr design "
                           f"runs on the virtual board: stepvit run --emulate --overlay)")
    return design


def build_design(export: Export, lanes: int | None, build_dir: str | Path | None,
                 under: Path = SIM_BUILDS) -> tuple[Path, int]:
    """Return the build folder and the lanes of a run: ``build_dir``'s design, or the default.

    Without ``build_dir`` the folder is :func:`default_build_dir` at ``lanes`` (or
    :data:`DEFAULT_LANES`); its name says its design, so it is recorded as that.
    """
    if build_dir is None:
        check_lanes(lanes)
        lanes = lanes or DEFAULT_LANES
        folder = default_build_dir(export, lanes, under)
        record_design(folder, export, lanes)
        return folder, lanes
    return Path(build_dir), int(design_in(build_dir, export, lanes)["lanes"])
