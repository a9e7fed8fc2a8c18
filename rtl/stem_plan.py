"""The stem engine's schedule, worked out at generation time (numpy only).

The stem (SPEC.md section 5) runs as a list of *passes*, like the core: for each step ``t``
and each module (stages, then the RPE) its passes, then the tokens of step ``t``. Every
module's passes go through one set of conv banks, one module at a time. Stage 0's current
comes from the image alone: it is cleared and scattered (from the pixels' bit planes) once,
at its first active step (a scatter per bit plane, most significant first, the banks
doubled between two), and its first fire keeps the pooled current it reads in a memory
of its own, which its later fires read in place of the banks (so the other modules' passes
may use them in between):

- ``clear``: zero the module's part of the conv banks (its ``depth`` cycles: every bank at
  once);
- ``scatter``: walk the input map, one event per (input spike, chunk of ``lanes`` outputs),
  each updating every conv output it reaches (:class:`~stepvit.rtl.stem_conv.StemConvBanks`);
  stage 0's scatter runs once per bit plane of the pixels, most significant first, each
  walking only that plane's bits (the pass's ``plane``);
- ``double``: between two of stage 0's plane scatters, double every word of its part of
  the banks (its ``depth`` cycles, a read and a write a cycle): Horner's rule, so the
  weights are added as they are, never shifted by the plane (no shifter in the banks);
- ``fire``: per LIF position and chunk, the pool window's maximum current (for stage 0
  after its first fire, the kept one) plus the bias into the LIFs (one a cycle);
- ``pool``: for a stage that pools after its LIF, the OR of each window's spike words
  (one word read a cycle);
- ``tokens``: ``X = E·(S_last + R)`` for every token and chunk, into the stream.

Each pass has a *gate*, a condition on the time-step masks: a module's passes run only at
its active steps, a scatter only when its input module was active too (a masked module
hands on zeros, so the next one sees no event: its fire still adds the bias), and stage 0's
clear and scatter only at its first active step (their gate also holds bits that must be
0: stage 0's earlier steps). The sequencer skips a pass whose
gate is false in no cycle at all.

A *chunk-major* plan (``chunk_major=True``) runs the same work module by module, and within
a module chunk by chunk of ``lanes`` output channels, every step inside: for each module,
for each chunk ``c``, for each step ``t`` the clear, scatter, fire and pool of chunk ``c``
alone; then the tokens of every step. It is exact (a LIF channel depends only on its own
inputs at steps up to ``t``: the golden model's ``run_module_major``), and it needs the
conv banks and the membranes of one chunk only (a chunk's membranes persist across its
steps, the next chunk's start at 0), the tap words of one ``(module, chunk)`` at a time
(contiguous in the tap memories, :func:`~stepvit.rtl.stem_conv.tap_words`), but each
module's emitted map of every step (the next module reads them later). Stage 0's clear and
scatter run once per chunk (at its first active step, the same gate); no other module uses
the banks between that chunk's fires, so the banks keep its current. Each pass's loops
handle its one chunk: a clear of one chunk's words, a scatter of one event per input bit,
a fire of one word per LIF position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stepvit.model.export import Export
from stepvit.model.export.stem import StemStage, stem_stages, widest_reach, word_counts
from stepvit.rtl.stem_banks import bank_modulus

#: Bit planes of a pixel (stage 0 scatters them one at a time; a spike is plane 0).
PLANES = 8
#: What a pass does (the sequencer's kind codes).
PASS_KINDS = ("clear", "scatter", "fire", "pool", "tokens", "double")
#: Every pass costs one start cycle besides its loop; a loop that writes after it reads
#: adds the cycles between: three for a fire (the window's words and its compare tree are
#: registered), one for an OR-pool and the tokens.
START_CYCLES = 1


@dataclass(frozen=True)
class StemPass:
    """One pass of the stem engine.

    ``kind`` is one of :data:`PASS_KINDS`; ``module`` an index into the stem's modules (-1
    for the tokens); ``step`` its time step. ``gate`` is a tuple of ``(module, step)`` mask
    bits that must all be set, ``masked`` one of bits that must all be 0 (stage 0's
    steps before the one of its clear and scatter). ``chunk``: a chunk-major plan's chunk
    of the module's outputs (0 in a step-major plan, whose passes handle every chunk).
    ``plane``: stage 0's scatter, the pixels' bit plane it walks (0 for every other pass).
    """

    kind: str
    module: int
    step: int
    gate: tuple[tuple[int, int], ...]
    masked: tuple[tuple[int, int], ...] = ()
    chunk: int = 0
    plane: int = 0

    def enabled(self, mask: np.ndarray) -> bool:
        """Return whether the pass runs under the 0/1 mask ``[modules, T]``."""
        return (all(bool(mask[module, step]) for module, step in self.gate)
                and not any(bool(mask[module, step]) for module, step in self.masked))


@dataclass(frozen=True)
class StemPlan:
    """The stem engine of one export at ``lanes`` output channels per event.

    Attributes
    ----------
    stages : list of StemStage
        The stem's modules in order (the RPE last, if on).
    lanes : int
        Output channels an event (or a fire, or a token word) handles at once.
    pool : tuple of int
        ``(kernel, stride, padding)`` of every pooled stage.
    t_max : int
        Steps.
    chunk_major : bool
        Module by module, chunk by chunk, every step inside (see the module's docstring);
        ``False``: step by step, every module's chunks in each pass.
    """

    stages: list[StemStage]
    lanes: int
    pool: tuple[int, int, int]
    t_max: int
    chunk_major: bool = False

    @classmethod
    def of(cls, image_shape: Any, stem: dict[str, Any], *, lanes: int,
           t_max: int, chunk_major: bool = False) -> StemPlan:
        """Return the plan of ``stem`` on images of ``image_shape``.

        Raises
        ------
        ValueError
            If ``lanes`` is not a positive integer.
        """
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise ValueError(f"stem lanes must be a positive integer, not {lanes!r}")
        pool = stem["pool"]
        return cls(stem_stages(image_shape, stem), lanes,
                   (int(pool["kernel"]), int(pool["stride"]), int(pool["padding"])), t_max,
                   bool(chunk_major))

    @classmethod
    def from_export(cls, export: Export, *, lanes: int, chunk_major: bool = False) -> StemPlan:
        """Return the plan of ``export``'s stem (an export with ``architecture.stem``)."""
        return cls.of(export.arch["image_shape"], export.arch["stem"], lanes=lanes,
                      t_max=export.t_max, chunk_major=chunk_major)

    @property
    def has_rpe(self) -> bool:
        """The last module is the RPE."""
        return self.stages[-1].name == "stem.rpe"

    @property
    def last_stage(self) -> int:
        """Index of the last conv stage (whose spikes are the tokens)."""
        return len(self.stages) - 1 - int(self.has_rpe)

    def chunks(self, index: int) -> int:
        """Chunks of ``lanes`` output channels of module ``index``."""
        return -(-self.stages[index].conv_shape[0] // self.lanes)

    def pass_chunks(self, index: int) -> int:
        """Chunks of module ``index`` that one of its passes handles (1 if chunk-major)."""
        return 1 if self.chunk_major else self.chunks(index)

    def source(self, index: int) -> int:
        """Return the module whose spikes module ``index`` walks (-1: the pixels)."""
        return self.last_stage if self.stages[index].name == "stem.rpe" else index - 1

    def window_pool(self, index: int) -> tuple[int, int, int]:
        """Return the pool its fire reads through (the stem's if before the LIF, else 1x1)."""
        return self.pool if self.stages[index].pool == "before" else (1, 1, 0)

    @property
    def modulus(self) -> int:
        """``m`` of the shared conv banks: the largest any module's reach or window needs."""
        return max(bank_modulus(stage.kernel, stage.stride, self.window_pool(index)[0])
                   for index, stage in enumerate(self.stages))

    def bank_depth(self, index: int) -> int:
        """Words of the shared ``m²`` conv banks that module ``index`` uses (one pass's chunks)."""
        blocks = [-(-size // self.modulus) for size in self.stages[index].conv_shape[1:]]
        return blocks[0] * blocks[1] * self.pass_chunks(index)

    def membrane_words(self, index: int) -> int:
        """Words of module ``index``'s membranes: a word per LIF position and pass chunk."""
        return int(np.prod(self.stages[index].lif_shape[1:])) * self.pass_chunks(index)

    @property
    def shared_membrane_depth(self) -> int:
        """Words of a chunk-major plan's one membrane memory: the largest module's.

        Chunk-major, a module's membranes live from its chunk's first fire to its last step,
        and no other module fires in between: every module's fit in one memory, each chunk
        starting fresh (its first fire reads 0).
        """
        if not self.chunk_major:
            raise ValueError("only a chunk-major plan shares its modules' membranes")
        return max(self.membrane_words(index) for index in range(len(self.stages)))

    def passes(self) -> list[StemPass]:
        """Return the passes in order (SPEC.md section 5's order of work, or chunk-major)."""
        if self.chunk_major:
            return self._chunk_major_passes()
        result = []
        for step in range(self.t_max):
            for index, stage in enumerate(self.stages):
                own = ((index, step),)
                if index == 0:
                    # the image's current, once: at stage 0's first active step
                    first = tuple((0, before) for before in range(step))
                    result.extend(_pixel_passes(step, own, first))
                else:
                    result.append(StemPass("clear", index, step, own))
                    result.append(StemPass("scatter", index, step,
                                           own + ((self.source(index), step),)))
                result.append(StemPass("fire", index, step, own))
                if stage.pool == "after":
                    result.append(StemPass("pool", index, step, own))
            result.append(StemPass("tokens", -1, step, ()))
        return result

    def _chunk_major_passes(self) -> list[StemPass]:
        """Return the passes module by module, chunk by chunk, step by step; then the tokens."""
        result = []
        for index, stage in enumerate(self.stages):
            for chunk in range(self.chunks(index)):
                for step in range(self.t_max):
                    this = ((index, step),)
                    if index == 0:
                        # chunk c's current, once: at stage 0's first active step
                        earlier = tuple((0, before) for before in range(step))
                        result.extend(_pixel_passes(step, this, earlier, chunk))
                    else:
                        result.append(StemPass("clear", index, step, this, (), chunk))
                        result.append(StemPass("scatter", index, step,
                                               this + ((self.source(index), step),), (), chunk))
                    result.append(StemPass("fire", index, step, this, (), chunk))
                    if stage.pool == "after":
                        result.append(StemPass("pool", index, step, this, (), chunk))
        result.extend(StemPass("tokens", -1, step, ()) for step in range(self.t_max))
        return result

    def pass_cycles(self, stem_pass: StemPass, input_bits: np.ndarray | None = None) -> int:
        """Return the cycles of one enabled pass.

        ``input_bits``: for a scatter, the set bits of each input word (``[positions]``;
        for stage 0 the set bits of the pass's plane in each pixel position's bytes).
        """
        if stem_pass.kind == "tokens":
            channels, height, width = self.stages[self.last_stage].out_shape
            return START_CYCLES + height * width * -(-channels // self.lanes) + 1
        index = stem_pass.module
        stage = self.stages[index]
        if stem_pass.kind in ("clear", "double"):
            return START_CYCLES + self.bank_depth(index)
        if stem_pass.kind == "fire":
            return START_CYCLES + int(np.prod(stage.lif_shape[1:])) * self.pass_chunks(index) + 3
        if stem_pass.kind == "pool":
            return START_CYCLES + int(np.prod(stage.out_shape[1:])) * self.pool[0] ** 2 + 1
        bits = np.asarray(input_bits)
        return self.scatter_cycles(index, int(bits.sum()), int((bits == 0).sum()))

    def scatter_cycles(self, index: int, set_bits: int, empty: int) -> int:
        """Return the cycles of module ``index``'s scatter over an input.

        ``set_bits`` set bits and ``empty`` positions with none: an event per set bit and
        chunk of the pass (every chunk, or one if chunk-major), a cycle per empty position,
        and the start.
        """
        return START_CYCLES + 1 + set_bits * self.pass_chunks(index) + empty

    def image_cycles(self, mask: np.ndarray, pixels: np.ndarray,
                     spike_maps: dict[tuple[int, int], np.ndarray]) -> int:
        """Return one image's cycles: the sum over its enabled passes.

        Parameters
        ----------
        mask : numpy.ndarray
            0/1 ``[modules, T]``, the stem's rows (stages, then the RPE).
        pixels : numpy.ndarray
            uint8 ``[C, H, W]``.
        spike_maps : dict
            ``(module, step)`` to that module's emitted spikes ``[C, H, W]`` (0/1) at an
            active step.
        """
        return self.profile_cycles(self.input_profile(mask, pixels, spike_maps))

    def input_profile(self, mask: np.ndarray, pixels: np.ndarray,
                      spike_maps: dict[tuple[int, int], np.ndarray]
                      ) -> list[tuple[StemPass, int, int]]:
        """Return one image's enabled passes, each with its input's set bits and empty positions.

        Both are 0 but for a scatter. That is all the cycles need of the image, at any lanes
        (the arguments are :meth:`image_cycles`'s).
        """
        counts = {key: tuple(int(n) for n in word_counts(np.asarray(spikes).sum(axis=0)))
                  for key, spikes in spike_maps.items()}
        return self.profile_of_counts(mask, pixels, counts)

    def profile_of_counts(self, mask: np.ndarray, pixels: np.ndarray,
                          counts: dict[tuple[int, int], tuple[int, int]]
                          ) -> list[tuple[StemPass, int, int]]:
        """Return :meth:`input_profile` from each emitted map's ``(set bits, empty positions)``.

        ``counts[(module, step)]`` for every active step of every module (the golden
        vectors keep them: ``STEM_MAP_KEYS``); stage 0's input comes from ``pixels``.
        """
        profile = []
        for stem_pass in self.passes():
            if not stem_pass.enabled(mask):
                continue
            set_bits = empty = 0
            if stem_pass.kind == "scatter":
                if stem_pass.module == 0:
                    set_bits, empty = (int(n) for n in word_counts(
                        plane_bits(pixels, stem_pass.plane)))
                else:
                    set_bits, empty = counts[(self.source(stem_pass.module), stem_pass.step)]
            profile.append((stem_pass, set_bits, empty))
        return profile

    def profile_cycles(self, profile: list[tuple[StemPass, int, int]]) -> int:
        """Return the cycles of an image's :meth:`input_profile` at this plan's lanes."""
        return sum(self.scatter_cycles(stem_pass.module, set_bits, empty)
                   if stem_pass.kind == "scatter" else self.pass_cycles(stem_pass)
                   for stem_pass, set_bits, empty in profile)

    def accumulate_lower_bound(self, work: int) -> float:
        """Cycles no engine of this parallelism beats: ``work`` accumulates over ``k²·lanes``.

        An event adds at most ``lanes`` weights at each of the up to ``k²`` (``m²`` banks)
        positions it reaches.
        """
        return work / (widest_reach(self.stages) * self.lanes)


def _pixel_passes(step: int, gate: tuple, masked: tuple, chunk: int = 0) -> list[StemPass]:
    """Return stage 0's clear and scatters at ``step``: a scatter a plane, MSB first, doubled.

    The banks hold ``sum over the planes walked so far of W·bit·2^(p - plane)``: each
    double makes room for the next plane's bits, so after plane 0 they hold ``W·pixel``.
    """
    result = [StemPass("clear", 0, step, gate, masked, chunk)]
    for plane in reversed(range(PLANES)):
        result.append(StemPass("scatter", 0, step, gate, masked, chunk, plane))
        if plane:
            result.append(StemPass("double", 0, step, gate, masked, chunk))
    return result


def plane_bits(pixels: np.ndarray, plane: int) -> np.ndarray:
    """Return ``[H, W]``: at each pixel position, how many channels have bit ``plane`` set.

    ``pixels`` is uint8 ``[C, H, W]``: what stage 0's scatter of that plane walks.
    """
    pixels = np.asarray(pixels, dtype=np.uint8)
    return ((pixels >> plane) & 1).sum(axis=0)


__all__ = ["PASS_KINDS", "PLANES", "StemPass", "StemPlan", "plane_bits"]
