"""Run :class:`~stepvit.rtl.core.StepvitCore` in Amaranth's simulator, image by image.

The tests compare what it returns with the golden model, bit for bit; the cycle counts
are the core's own (``start`` to ``done``: the compute, without the load, which in the
accelerator overlaps the image before), the figure the efficiency target is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from stepvit.model.export import Export
from stepvit.model.export.errors import StepvitError
from stepvit.rtl.axi_reader import read_channels
from stepvit.rtl.axi_writer import AXI_WRITE_MEMBERS
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.ddr_model import DdrModel, DdrWriteModel
from stepvit.rtl.interface import image_words
from stepvit.rtl.protocol import pack_images


@dataclass(frozen=True)
class CoreRun:
    """What the core computed for one image.

    Attributes
    ----------
    logits : list of int
    predicted : int
    spike_counts : list of int
        Per LIF layer, SPEC.md section 1 order.
    cycles : int
        Clock cycles from ``start`` to ``done``.
    tokens_held : int
        ``back_to_back`` runs of a core with one stream buffer only: the cycles of this
        image's run in which the next image's stem tokens waited for the blocks.
    walk_held : int
        The cycles its walk was held (``walk_hold``, with ``hold_rate``, and by the stream
        in DDR).
    stream_stalls : int
        A core with its stream in DDR only: the cycles its walk waited for the stream's
        reads or write room, and its stem's tokens for write room, since the run before's
        ``done`` (the core's ``stream_stalls``).
    stream_beats : tuple of int
        A core with its stream in DDR only: the AXI beats of the stream read and written
        from ``start`` to ``done``.
    """

    logits: list[int]
    predicted: int
    spike_counts: list[int]
    cycles: int
    tokens_held: int = 0
    walk_held: int = 0
    stream_stalls: int = 0
    stream_beats: tuple[int, int] = (0, 0)


def simulate_core(
    export: Export,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    lanes: int,
    core: StepvitCore | None = None,
    max_cycles: int = 2_000_000,
    back_to_back: bool = False,
    hold_rate: float = 0.0,
    hold_seed: int = 0,
    ddr: DdrFigures | None = None,
) -> list[CoreRun]:
    """Run ``images`` (``uint8 [B, C, H, W]``) through the core under ``masks``.

    One image at a time by default (each loaded after the one before is done); with
    ``back_to_back`` each image loads while the one before runs and starts at its ``done``,
    as the accelerator streams frames (a stem computes the next image meanwhile).

    Parameters
    ----------
    export : Export
        The export the core is built from.
    images : numpy.ndarray
        The images, one run each.
    masks : numpy.ndarray
        0/1 ``[modules, T]``, written to the core's ``masks`` before each ``start``.
    lanes : int
        Accumulator lanes.
    core : StepvitCore, optional
        A core built already (for instance with altered memories); by default a new one.
    max_cycles : int
        Cycles one image may take before the run is refused.
    back_to_back : bool
        Load each image while the one before runs (above); the masks are written once.
    hold_rate, hold_seed : float, int
        Hold the walk (``walk_hold``) on a random share ``hold_rate`` of the cycles, drawn
        from ``hold_seed``: as activations that arrive late from DDR would.
    ddr : DdrFigures, optional
        A core whose stream is in DDR (``stream_ddr``): the simulated memory behind its
        ``act_*`` channels (default :class:`DdrFigures`'s). It starts as random bytes, so a
        read of a word never written shows.

    Raises
    ------
    StepvitError
        If an image takes more than ``max_cycles``; with the stream in DDR, if the core
        flags an error (``stream_error``) or breaks the bus's rules.
    """
    core = core if core is not None else StepvitCore(export, lanes=lanes)
    memory = _CoreDdr(core, ddr or DdrFigures()) if core.stream_unit is not None else None
    words = image_words(export)
    m = Module()
    m.submodules.core = core
    m.submodules.image = image_buffer = Memory(shape=32, depth=max(words, 2), init=[])
    read = image_buffer.read_port()
    m.d.comb += [read.addr.eq(core.img_addr), core.img_data.eq(read.data)]
    mask_words = [sum(int(bit) << t for t, bit in enumerate(row)) for row in np.asarray(masks)]
    runs: list[CoreRun] = []
    holds = np.random.default_rng(hold_seed)

    async def load(ctx: object, image: np.ndarray) -> None:
        for address, word in enumerate(pack_images(image[None])[0].tolist()):
            ctx.set(image_buffer.data[address], word)
        ctx.set(core.load, 1)
        await ctx.tick()
        ctx.set(core.load, 0)

    async def until_done(ctx: object, cycles: int, loading: bool,
                         waiting: Signal | None) -> tuple[CoreRun, bool]:
        """Tick until the run's ``done``; return its outputs and whether a load is still on.

        ``cycles``: those since ``start`` already; ``loading``: the next image is loading
        meanwhile (its ``loaded`` watched); ``waiting``: the stem front's tokens wait, counted.
        """
        held = walk_held = 0
        beats = memory.beats() if memory is not None else (0, 0)
        while True:
            # (a load may end in the cycle the run does)
            loading = loading and not ctx.get(core.loaded)
            if ctx.get(core.done):
                break
            held += int(waiting is not None and ctx.get(waiting))
            ctx.set(core.walk_hold, int(hold_rate > 0 and holds.random() < hold_rate))
            walk_held += ctx.get(core.walk_held)
            await ctx.tick()
            cycles += 1
            if cycles > max_cycles:
                raise StepvitError(f"the core did not finish an image in {max_cycles} "
                                   "cycles")
        run = CoreRun(
            logits=[int(ctx.get(core.logits[k])) for k in range(len(core.logits))],
            predicted=int(ctx.get(core.predicted)),
            spike_counts=[int(ctx.get(core.spike_counts[i]))
                          for i in range(len(core.spike_counts))],
            cycles=cycles, tokens_held=held, walk_held=walk_held,
            stream_stalls=memory.stalls(ctx) if memory is not None else 0,
            stream_beats=tuple(now - then for now, then in zip(
                memory.beats() if memory is not None else (0, 0), beats)))
        if memory is not None:
            memory.check(ctx, core)
        return run, loading

    async def streamed(ctx: object) -> None:
        # the masks are the host's to write while no image is in flight: once
        for module, word in enumerate(mask_words):
            ctx.set(core.masks[module], word)
        await load(ctx, images[0])
        while not ctx.get(core.loaded):
            await ctx.tick()
        await ctx.tick()
        front = core.stem_front
        waiting = front.tokens_waiting if front is not None and front.buffers == 1 else None
        for index in range(len(images)):
            ctx.set(core.start, 1)
            await ctx.tick()
            ctx.set(core.start, 0)
            loading = index + 1 < len(images)
            if loading:
                await load(ctx, images[index + 1])
            run, loading = await until_done(ctx, 1 + loading, loading, waiting)
            runs.append(run)
            while loading and not ctx.get(core.loaded):
                await ctx.tick()
            await ctx.tick()

    async def testbench(ctx: object) -> None:
        for image in images:
            for module, word in enumerate(mask_words):
                ctx.set(core.masks[module], word)
            await load(ctx, image)
            while not ctx.get(core.loaded):
                await ctx.tick()
            await ctx.tick()
            ctx.set(core.start, 1)
            await ctx.tick()
            ctx.set(core.start, 0)
            run, _ = await until_done(ctx, 1, False, None)
            runs.append(run)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    if memory is not None:
        sim.add_testbench(memory.serve, background=True)
    sim.add_testbench(streamed if back_to_back else testbench)
    sim.run()
    return runs


@dataclass(frozen=True)
class DdrFigures:
    """The simulated DDR behind a core whose stream is in DDR.

    Attributes
    ----------
    latency : int
        Cycles from a read burst's request to its first beat, and from a write burst's
        last beat to its response.
    ready_rate : float
        The chance a cycle's ``arready``, ``awready`` and ``wready`` are each high.
    seed : int
        The memory's random contents and its backpressure.
    base : int
        The activation buffer's byte address.
    """

    latency: int = 40
    ready_rate: float = 1.0
    seed: int = 0
    base: int = 0x1F40


class _CoreDdr:
    """The read and write models behind a core's ``act_*`` channels, one memory."""

    def __init__(self, core: StepvitCore, figures: DdrFigures) -> None:
        beat_bytes = len(core.act_rdata) // 8
        size = figures.base + core.activation_bytes + 4096
        rng = np.random.default_rng(figures.seed)
        self.memory = rng.integers(0, 256, size, dtype=np.uint8)
        self.figures = figures
        self.read = DdrModel(self.memory, beat_bytes, latency=figures.latency, interval=1,
                             seed=figures.seed + 1, arready_rate=figures.ready_rate,
                             rvalid_gap=0.0)
        # the stem's maps are written a chunk of a position at a time, with byte strobes
        self.write = DdrWriteModel(self.memory, beat_bytes, latency=figures.latency,
                                   seed=figures.seed + 2, ready_rate=figures.ready_rate,
                                   strobes=core.stem_maps_ddr)
        self.read_port = SimpleNamespace(**{name: getattr(core, f"act_{name}")
                                            for name in read_channels(32, 8 * beat_bytes)})
        self.write_port = SimpleNamespace(**{name: getattr(core, f"act_{name}")
                                             for name in AXI_WRITE_MEMBERS})
        self.core = core
        self._stalls = 0

    async def serve(self, ctx: object) -> None:
        """Drive both models every cycle, the activation buffer's address held."""
        ctx.set(self.core.activations_base, self.figures.base)
        cycle = 0
        while True:
            self.read.cycle(ctx, self.read_port, cycle)
            self.write.cycle(ctx, self.write_port, cycle)
            await ctx.tick()
            cycle += 1

    def stalls(self, ctx: object) -> int:
        """Return the core's stream stalls since the last call."""
        now = ctx.get(self.core.stream_stalls)
        stalls, self._stalls = now - self._stalls, now
        return stalls

    def beats(self) -> tuple[int, int]:
        """Return the beats read (requested) and written so far."""
        return sum(arlen + 1 for _, arlen, _, _ in self.read.bursts), self.write.written

    def check(self, ctx: object, core: StepvitCore) -> None:
        """Refuse a run whose stream traffic went wrong."""
        if ctx.get(core.stream_error):
            raise StepvitError("the core flagged an error in its stream's DDR traffic")
        if self.write.violations:
            raise StepvitError("the stream's writes broke the AXI rules: "
                               + "; ".join(self.write.violations[:3]))

