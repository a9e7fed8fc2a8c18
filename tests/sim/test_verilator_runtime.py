"""Verilator's run-time objects: compiled once per compile command, reused by later builds.

The reuse is checked on a stand-in of Verilator's generated makefiles (``make -n`` of the
run-time objects is what keys them), so no C++ is compiled here; the Verilated tests build
real designs through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from stepvit.sim.verilator import PREFIX, _RuntimeObjects

#: The generated list of run-time objects (the lines Verilator writes).
CLASSES = "VM_GLOBAL_FAST += \\\n  verilated \\\n  verilated_threads \\\n\n"


def _objects(folder: Path, flags: str) -> tuple[Path, list[str]]:
    """Write a build's stand-in makefiles, whose run-time rule compiles with ``flags``."""
    folder.mkdir(parents=True)
    (folder / f"{PREFIX}_classes.mk").write_text(CLASSES)
    (folder / f"{PREFIX}.mk").write_text(
        f"verilated.o verilated_threads.o:\n\techo cc {flags} -o $@ > $@\n")
    return folder, ["make", "-C", str(folder), "-f", f"{PREFIX}.mk"]


def test_a_second_build_takes_the_first_builds_objects(tmp_path: Path) -> None:
    first, make = _objects(tmp_path / "a" / "obj", "-Os -DVM_TRACE=0")
    runtime = _RuntimeObjects(first, tmp_path, make, dict(os.environ))
    assert runtime.names == ["verilated.o", "verilated_threads.o"]
    runtime.take()  # nothing kept yet
    assert not (first / "verilated.o").exists()
    for name in runtime.names:
        (first / name).write_text(f"compiled {name}")
    runtime.keep()
    second, make = _objects(tmp_path / "b" / "obj", "-Os -DVM_TRACE=0")
    (second / f"{PREFIX}.mk").touch()
    again = _RuntimeObjects(second, tmp_path, make, dict(os.environ))
    assert again.folder == runtime.folder
    again.take()
    assert (second / "verilated.o").read_text() == "compiled verilated.o"
    # newer than the generated makefile, so that its make keeps them
    assert (second / "verilated.o").stat().st_mtime >= (second / f"{PREFIX}.mk").stat().st_mtime


def test_objects_of_another_compile_command_are_not_taken(tmp_path: Path) -> None:
    first, make = _objects(tmp_path / "a" / "obj", "-Os -DVM_TRACE=0")
    runtime = _RuntimeObjects(first, tmp_path, make, dict(os.environ))
    for name in runtime.names:
        (first / name).write_text("untraced")
    runtime.keep()
    traced, make = _objects(tmp_path / "b" / "obj", "-Os -DVM_TRACE=1")
    other = _RuntimeObjects(traced, tmp_path, make, dict(os.environ))
    assert other.folder != runtime.folder
    other.take()
    assert not (traced / "verilated.o").exists()
