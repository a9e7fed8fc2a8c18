"""The convolutional stem's shape (SPEC.md section 5): numpy only, shared by every stage.

A stem is Spikformer's spiking patch splitting (SPS): a list of conv stages, each a
``k x k`` convolution (no bias; BatchNorm folds into an integer bias), a LIF layer, and
optionally a max-pool, before the LIF (on currents) or after it (on spikes: an OR over the
window); then, optionally, the relative position embedding (RPE), a ``3 x 3`` conv
``D -> D`` with its own LIF whose spikes are added to the last stage's. Every stage and the
RPE is a module with its own time-step mask row, named ``stem.0``, ``stem.1``, ...,
``stem.rpe``; each has one LIF layer of the same name.

The manifest's ``architecture.stem`` (and a config's ``model.stem``) is a mapping::

    stages:                        # in order; the last one's channels are the width D
      - {channels: 16, kernel: 3, stride: 1, padding: 1, pool: after}
    pool: {kernel: 3, stride: 2, padding: 1}   # the max-pool of every pooled stage
    rpe: true
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Where a stage's max-pool sits: none, on the currents before the LIF, on the spikes after.
POOL_PLACES = ("none", "before", "after")
STAGE_KEYS = ("channels", "kernel", "stride", "padding", "pool")
POOL_KEYS = ("kernel", "stride", "padding")
STEM_KEYS = ("stages", "pool", "rpe")
#: Spikformer's max-pool: kernel 3, stride 2, padding 1 (32x32 -> 16x16 -> 8x8).
DEFAULT_POOL = {"kernel": 3, "stride": 2, "padding": 1}
RPE_KERNEL = 3


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Return the output length of a convolution or pool along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class StemStage:
    """One conv stage (or the RPE) with its shapes.

    Attributes
    ----------
    name : str
        Module and LIF layer name: ``stem.i`` or ``stem.rpe``.
    in_shape : tuple of int
        ``(C, H, W)`` of its input (the image, or the previous stage's output spikes).
    conv_shape : tuple of int
        ``(Cout, H', W')`` of the convolution's output (the current, before any pool).
    lif_shape : tuple of int
        ``(Cout, ...)`` of its LIF layer (pooled when the pool is before the LIF).
    out_shape : tuple of int
        ``(Cout, ...)`` of the spikes it hands on (pooled when the pool is after the LIF).
    kernel, stride, padding : int
        The convolution.
    pool : str
        One of :data:`POOL_PLACES`.
    """

    name: str
    in_shape: tuple[int, int, int]
    conv_shape: tuple[int, int, int]
    lif_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int
    stride: int
    padding: int
    pool: str

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """``[Cout, Cin, k, k]`` of its weights."""
        return (self.conv_shape[0], self.in_shape[0], self.kernel, self.kernel)

    def reach(self) -> np.ndarray:
        """Return ``[H, W]`` int64: how many conv output positions each input position feeds.

        An input spike at ``(y, x)`` adds its ``Cout`` weights to this many output
        positions (borders excluded), so its accumulates are ``reach[y, x] * Cout``.
        """
        _, height, width = self.in_shape
        _, out_h, out_w = self.conv_shape
        reach = np.zeros((height, width), dtype=np.int64)
        for oy in range(out_h):
            for ox in range(out_w):
                y0, x0 = oy * self.stride - self.padding, ox * self.stride - self.padding
                ys = slice(max(y0, 0), min(y0 + self.kernel, height))
                xs = slice(max(x0, 0), min(x0 + self.kernel, width))
                reach[ys, xs] += 1
        return reach


def stem_stages(image_shape: tuple[int, int, int] | list[int],
                stem: dict[str, Any]) -> list[StemStage]:
    """Return the stages of ``stem`` on images of ``image_shape`` (RPE last, if on).

    Raises
    ------
    ValueError
        If a stage's output has no pixel left.
    """
    pool = {**DEFAULT_POOL, **(stem.get("pool") or {})}
    shape = tuple(int(v) for v in image_shape)
    stages = []

    def pooled(channels: int, height: int, width: int) -> tuple[int, int, int]:
        return (channels, conv_out(height, pool["kernel"], pool["stride"], pool["padding"]),
                conv_out(width, pool["kernel"], pool["stride"], pool["padding"]))

    for index, stage in enumerate(stem["stages"]):
        kernel = int(stage.get("kernel", 3))
        stride = int(stage.get("stride", 1))
        padding = int(stage.get("padding", kernel // 2))
        place = stage.get("pool", "none")
        conv = (int(stage["channels"]), conv_out(shape[1], kernel, stride, padding),
                conv_out(shape[2], kernel, stride, padding))
        lif = pooled(*conv) if place == "before" else conv
        out = pooled(*lif) if place == "after" else lif
        if min(out[1:]) < 1 or min(conv[1:]) < 1:
            raise ValueError(f"stem stage {index} leaves no pixel of a {shape[1]}x{shape[2]} "
                             "input")
        stages.append(StemStage(f"stem.{index}", shape, conv, lif, out, kernel, stride,
                                padding, place))
        shape = out
    if stem.get("rpe", False):
        stages.append(StemStage("stem.rpe", shape, shape, shape, shape, RPE_KERNEL, 1,
                                RPE_KERNEL // 2, "none"))
    return stages


def stem_names(stem: dict[str, Any] | None) -> list[str]:
    """Return the stem's module (and LIF layer) names, in order; ``["embed"]`` without a stem."""
    if not stem:
        return ["embed"]
    names = [f"stem.{index}" for index in range(len(stem["stages"]))]
    return names + (["stem.rpe"] if stem.get("rpe", False) else [])


def stem_tokens(image_shape: tuple[int, int, int] | list[int],
                stem: dict[str, Any]) -> tuple[int, int]:
    """Return ``(tokens, dim)``: the last stage's positions and channels."""
    channels, height, width = stem_stages(image_shape, stem)[-1].out_shape
    return height * width, channels


def complete_stem(stem: dict[str, Any]) -> dict[str, Any]:
    """Return ``stem`` with every default written out (the form a manifest holds)."""
    stages = []
    for stage in stem["stages"]:
        kernel = int(stage.get("kernel", 3))
        stages.append({"channels": int(stage["channels"]), "kernel": kernel,
                       "stride": int(stage.get("stride", 1)),
                       "padding": int(stage.get("padding", kernel // 2)),
                       "pool": str(stage.get("pool", "none"))})
    return {"stages": stages, "pool": {**DEFAULT_POOL, **(stem.get("pool") or {})},
            "rpe": bool(stem.get("rpe", False))}


def check_stem(stem: Any, image_shape: tuple[int, int, int] | list[int], where: str) -> str | None:
    """Return what is wrong with ``stem`` (one line naming the field under ``where``), or None.

    The stem must be complete (:func:`complete_stem`): every key present, integers in range,
    ``pool`` one of :data:`POOL_PLACES`, and every stage leaving a pixel.
    """
    if not isinstance(stem, dict) or set(stem) != set(STEM_KEYS):
        return f"{where}: expected a mapping with keys {', '.join(STEM_KEYS)}"
    stages, pool = stem["stages"], stem["pool"]
    if not isinstance(stages, list) or not stages:
        return f"{where}.stages: expected a non-empty list"
    if not isinstance(pool, dict) or set(pool) != set(POOL_KEYS):
        return f"{where}.pool: expected a mapping with keys {', '.join(POOL_KEYS)}"
    if not isinstance(stem["rpe"], bool):
        return f"{where}.rpe: expected true or false, got {stem['rpe']!r}"
    lowest = {"channels": 1, "kernel": 1, "stride": 1, "padding": 0}
    for key in POOL_KEYS:
        if not _is_int(pool[key]) or pool[key] < lowest[key]:
            return f"{where}.pool.{key}: expected an integer >= {lowest[key]}, got {pool[key]!r}"
    for index, stage in enumerate(stages):
        here = f"{where}.stages[{index}]"
        if not isinstance(stage, dict) or set(stage) != set(STAGE_KEYS):
            return f"{here}: expected a mapping with keys {', '.join(STAGE_KEYS)}"
        for key, low in lowest.items():
            if not _is_int(stage[key]) or stage[key] < low:
                return f"{here}.{key}: expected an integer >= {low}, got {stage[key]!r}"
        if stage["padding"] >= stage["kernel"]:
            return f"{here}.padding: must be below the kernel ({stage['kernel']})"
        if stage["pool"] not in POOL_PLACES:
            return f"{here}.pool: expected one of {', '.join(POOL_PLACES)}, got {stage['pool']!r}"
    if pool["padding"] * 2 > pool["kernel"]:
        return f"{where}.pool.padding: at most half the pool kernel ({pool['kernel']})"
    try:
        stem_stages(image_shape, stem)
    except ValueError as error:
        return f"{where}: {error}"
    return None


def first_layer_macs(arch: dict[str, Any]) -> int:
    """Return the first layer's multiply-accumulates per image in the float view (``mac_ops``).

    The patch embedding's ``N·D·C·p·p``, or the stem's first conv, ``H'·W'·Cout·C·k²``
    (computed once per image: direct encoding).
    """
    channels = arch["image_shape"][0]
    if arch.get("stem"):
        first = stem_stages(arch["image_shape"], arch["stem"])[0]
        out_channels, out_h, out_w = first.conv_shape
        return out_h * out_w * out_channels * channels * first.kernel ** 2
    return arch["tokens"] * arch["dim"] * channels * arch["patch"] ** 2


def dense_stem_ac_ops(stages: list[StemStage]) -> int:
    """Return one step's accumulates of the stem's convs on spikes with every input spiking.

    Every module but stage 0 (which sees pixels): ``sum of reach x Cin x Cout``.
    """
    return sum(int(stage.reach().sum()) * stage.in_shape[0] * stage.conv_shape[0]
               for stage in stages[1:])


def word_counts(words: Any) -> tuple[Any, Any]:
    """Return the set bits and the empty positions of a map's words ``[..., H, W]``.

    ``words`` holds each position's set bits over the channels (a stem map summed over its
    channel axis, or a pixel's bit planes). The golden vectors' ``stem_map_bits`` and
    ``stem_map_empty`` are these of each map a stem module hands on (section 5), and the
    stem engine walks a word per position: an event per set bit, a cycle per empty word.
    """
    return words.sum(axis=(-2, -1)), (words == 0).sum(axis=(-2, -1))


def widest_reach(stages: list[StemStage]) -> int:
    """Return the most conv outputs one input spike reaches in any stage: ``ceil(k/s)²``."""
    return max((-(-stage.kernel // stage.stride)) ** 2 for stage in stages)


def lower_bound_parts(arch: dict[str, Any], work: dict[str, Any], lanes: int,
                      stem_lanes: int | None = None) -> tuple[Any, Any]:
    """Return the blocks' and the stem's cycle bounds of a stem export's golden ``work``.

    The blocks' accumulates over the core's ``lanes``; the stem's (``embed_ac_ops`` and
    ``stem_ac_ops``) over :func:`widest_reach` times ``stem_lanes`` (default ``lanes``).
    """
    reach = widest_reach(stem_stages(arch["image_shape"], arch["stem"]))
    stem = work["embed_ac_ops"] + work["stem_ac_ops"]
    return ((work["ac_ops"] - work["stem_ac_ops"]) / lanes,
            stem / (reach * (stem_lanes or lanes)))


def accumulate_lower_bound(arch: dict[str, Any], work: dict[str, Any], lanes: int,
                           stem_lanes: int | None = None) -> Any:
    """Return the cycles no accelerator of ``lanes`` lanes beats, from golden ``work``.

    The core adds ``lanes`` weights an event, so the transformer's accumulates count
    ``1 / lanes`` cycle each. The stem engine's event adds ``lanes`` weights at each of the
    up to ``ceil(k/s)²`` outputs a spike reaches, so the stem's (``embed_ac_ops`` and
    ``stem_ac_ops``) count ``1 / (ceil(k/s)²·lanes)`` at the widest stage's reach. The stem
    of one image runs while the blocks compute the image before, so back to back the bound
    is the larger of the two. The stem engine has ``stem_lanes`` lanes (default ``lanes``).
    Works on numbers or arrays of the golden model's per-image work.
    """
    if not arch.get("stem"):
        return (work["ac_ops"] + work["embed_ac_ops"]) / lanes
    return np.maximum(*lower_bound_parts(arch, work, lanes, stem_lanes))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["DEFAULT_POOL", "POOL_PLACES", "StemStage", "accumulate_lower_bound", "check_stem",
           "complete_stem",
           "conv_out", "dense_stem_ac_ops", "first_layer_macs", "lower_bound_parts", "stem_names",
           "stem_stages", "stem_tokens", "widest_reach", "word_counts"]
