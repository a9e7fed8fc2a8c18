"""The weights-from-DDR dataflow, planned: traffic and cycles per image (numpy only).

Not a design yet: the planning model the DDR accelerator is to be built against
(docs/ddr-dataflow.md). A network larger than the chip runs *layer by layer*: each layer's
weights stream from DDR once per batch, in tiles of the output channels its lanes compute
at once, double-buffered, and for each tile every image of the batch runs every active step
of the layer before the next tile. That order gives the step-by-step result bit for bit (a
layer's state is its own LIFs', and at a step it reads only what the layers before it
emitted at that step; :meth:`stepvit.model.golden.GoldenModel.run_module_major` is its
reference). So a weight is read once per batch, however many steps and images use it, and
what crosses between layers is spike maps (a bit per neuron and step) and the residual
stream.

Per layer and batch of ``B`` images, with ``C`` its compute cycles per image and ``W`` its
weight bytes, ``A`` the activation bytes it moves per image and ``bw`` the bytes DDR moves a
cycle::

    cycles = max(B·C, (W + B·A) / bw) + latency

(the fetch of the next tile overlaps the compute of this one). ``C`` counts the layer's
accumulates over its lanes (the stem's convs over ``k²`` times its lanes, as the stem
engine does) and its LIFs' fires, at a given spike rate; the stalls are what the memory
adds to ``B·C``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stepvit.model.export.stem import complete_stem, stem_stages, widest_reach

#: The memory figures without a board or a flag: the PYNQ-Z2's (boards/pynq-z2/board.yaml,
#: whose ``ddr`` section says which are assumed).
DEFAULT_BYTES_PER_CYCLE = 8.0
DEFAULT_LATENCY = 40
#: Bytes per output channel besides the weights: an int32 bias and an int32 threshold.
CHANNEL_BYTES = 8


@dataclass(frozen=True)
class LayerWork:
    """One layer of the network as the DDR dataflow sees it.

    Attributes
    ----------
    name : str
        The layer (a LIF layer's name, or the linear layer feeding it).
    engine : str
        ``"stem"`` (the conv engine) or ``"core"``.
    weight_bytes : int
        Its weights (int8) plus :data:`CHANNEL_BYTES` per output channel; 0 for a LIF alone.
    inputs : int
        Input values per step (spikes, pixels' bit planes or stream values).
    fan_out : float
        Accumulates per input spike (output channels; for a conv, times the outputs a spike
        reaches on average, borders counted).
    neurons : int
        LIF neurons it fires per step (0 for a linear layer whose output adds to the stream).
    in_bits : int
        Bits per input value in DDR (1 for spikes, the stream's width for ``X``).
    out_bits : int
        Bits per output value in DDR per step (1 per spike; the stream's width when it
        adds to ``X``, which it then reads too).
    out_values : int
        Output values per step (the spikes, or the stream values it adds to).
    channels : int
        Output channels, which its lanes take in tiles.
    int8 : int
        Of ``weight_bytes``, the int8 weights (the rest: biases and thresholds).
    module : str
        Its module (its time-step mask row).
    source : str or None
        The LIF layer whose spikes it reads (None: the pixels or the stream ``X``).
    mixes : bool
        Every output channel reads every input channel (a conv or a linear layer): a tile
        of output channels reads all the inputs. Otherwise (a LIF alone, the attention,
        per head) a tile reads its own channels.
    once : bool
        Computed once per image, not per step (stage 0's current from the pixels).
    """

    name: str
    engine: str
    weight_bytes: int
    inputs: int
    fan_out: float
    neurons: int
    in_bits: int
    out_bits: int
    out_values: int
    channels: int
    int8: int = 0
    module: str = ""
    source: str | None = None
    mixes: bool = True
    once: bool = False


def layer_works(arch: dict[str, Any], stream_bits: int = 15) -> list[LayerWork]:
    """Return the layers of ``arch`` (a manifest's ``architecture``) in network order."""
    dim, mlp, tokens = arch["dim"], arch["mlp_dim"], arch["tokens"]
    layers = []
    stem = arch.get("stem")
    if stem:
        stages = stem_stages(arch["image_shape"], stem)
        for index, stage in enumerate(stages):
            cout, cin, kernel, _ = stage.weight_shape
            reach = float(stage.reach().mean())  # outputs a spike reaches, borders counted
            inputs = math.prod(stage.in_shape)
            layers.append(LayerWork(
                stage.name, "stem", cout * cin * kernel * kernel + CHANNEL_BYTES * cout,
                inputs * (8 if index == 0 else 1), cout * reach, math.prod(stage.lif_shape),
                8 if index == 0 else 1, 1, math.prod(stage.out_shape), cout,
                int8=cout * cin * kernel * kernel, module=stage.name,
                source="pixels" if index == 0 else stem_source(stages, index),
                once=index == 0))
    else:
        channels, height, width = arch["image_shape"]
        patch_len = channels * arch["patch"] ** 2
        layers.append(LayerWork("embed", "core", patch_len * dim + CHANNEL_BYTES * dim,
                                tokens * patch_len * 8, dim, tokens * dim, 8, 1,
                                tokens * dim, dim, int8=patch_len * dim, module="embed",
                                source="pixels", once=True))
    values = tokens * dim
    for block in range(arch["depth"]):
        attn, ffn = f"blocks.{block}.attn", f"blocks.{block}.mlp"
        layers.append(LayerWork(f"{attn}.in", "core", CHANNEL_BYTES * dim, values, 0, values,
                                stream_bits, 1, values, dim, module=attn, mixes=False))
        for name in ("q", "k", "v"):
            layers.append(LayerWork(f"{attn}.{name}", "core", dim * dim + CHANNEL_BYTES * dim,
                                    values, dim, values, 1, 1, values, dim, int8=dim * dim,
                                    module=attn, source=f"{attn}.in"))
        head_dim = dim // arch["heads"]
        # Q·(KᵀV): a Q spike adds a head's row of KᵀV; KᵀV adds a K spike's V row
        layers.append(LayerWork(f"{attn}.attn", "core", CHANNEL_BYTES * dim, 3 * values,
                                head_dim / 3, values, 1, 1, values, dim, module=attn,
                                source=f"{attn}.q", mixes=False))
        layers.append(LayerWork(f"{attn}.proj", "core", dim * dim + dim * 4, values, dim, 0,
                                1, stream_bits, values, dim, int8=dim * dim, module=attn,
                                source=f"{attn}.attn"))
        layers.append(LayerWork(f"{ffn}.in", "core", CHANNEL_BYTES * dim, values, 0, values,
                                stream_bits, 1, values, dim, module=ffn, mixes=False))
        layers.append(LayerWork(f"{ffn}.fc1", "core", dim * mlp + CHANNEL_BYTES * mlp,
                                values, mlp, tokens * mlp, 1, 1, tokens * mlp, mlp,
                                int8=dim * mlp, module=ffn, source=f"{ffn}.in"))
        layers.append(LayerWork(f"{ffn}.fc2", "core", mlp * dim + dim * 4, tokens * mlp, dim,
                                0, 1, stream_bits, values, dim, int8=mlp * dim, module=ffn,
                                source=f"{ffn}.fc1"))
    classes = arch["num_classes"]
    layers.append(LayerWork("head", "core", CHANNEL_BYTES * dim + dim * classes + 4 * classes,
                            values, 0, values, stream_bits, 0, 0, dim, int8=dim * classes,
                            module="head", mixes=False))
    return layers


def stem_source(stages: list[Any], index: int) -> str:
    """Return the stem layer whose spikes stem module ``index`` reads (the RPE: the last's)."""
    last = len(stages) - 1 - int(stages[-1].name == "stem.rpe")
    return stages[last if stages[index].name == "stem.rpe" else index - 1].name


@dataclass(frozen=True)
class LayerCycles:
    """One layer's cycles and traffic per image at a batch (:func:`plan`)."""

    name: str
    accumulates: float
    compute: float
    stall: float
    weight_bytes: float
    activation_bytes: float


def layer_cycles(layer: LayerWork, *, batch: int, lanes: int, stem_lanes: int, reach: int,
                 steps: float, spike_rate: float, bytes_per_cycle: float, latency: int,
                 input_buffer: int) -> LayerCycles:
    """Return ``layer``'s cycles per image at ``batch`` images (the module docstring's rule).

    ``steps``: its active steps; ``spike_rate``: the share of its input's bits set at an
    active step (for stage 0 or the embedding, of the pixels' bit-plane bits). The batch's
    inputs are read once when they fit ``input_buffer`` bytes on chip, else, for a layer
    that mixes its channels, once per tile.
    """
    rate = spike_rate if layer.in_bits == 1 or layer.once else 1.0
    runs = 1 if layer.once else steps
    per_cycle = reach * stem_lanes if layer.engine == "stem" else lanes
    width = stem_lanes if layer.engine == "stem" else lanes
    accumulates = layer.inputs * rate * layer.fan_out * runs
    fires = math.ceil(layer.neurons / width) * steps if layer.neurons else 0
    compute = accumulates / per_cycle + fires
    # what the layer reads and writes per image: its inputs (stream values, spike maps or
    # the pixels) and its outputs (spikes, or the stream it adds to, read and written)
    read_bits = layer.inputs if layer.once else layer.inputs * layer.in_bits * runs
    if layer.mixes and batch * read_bits / 8 > input_buffer:
        read_bits *= math.ceil(layer.channels / width)  # again for every tile
    moved = read_bits + layer.out_values * layer.out_bits * steps * (2 if layer.out_bits > 1
                                                                     else 1)
    activation = moved / 8
    transfer = (layer.weight_bytes + batch * activation) / bytes_per_cycle
    total = max(batch * compute, transfer) + latency
    return LayerCycles(layer.name, accumulates, compute, (total - batch * compute) / batch,
                       layer.weight_bytes / batch, activation)


def plan(arch: dict[str, Any], *, batch: int, lanes: int, stem_lanes: int | None = None,
         steps: float = 2.0, spike_rate: float = 0.25, pixel_rate: float = 0.5,
         bytes_per_cycle: float = DEFAULT_BYTES_PER_CYCLE, latency: int = DEFAULT_LATENCY,
         input_buffer: int = 65_536, stream_bits: int = 15,
         measured: tuple[dict[str, float], dict[str, float]] | None = None) -> dict[str, Any]:
    """Return the cycles per image of ``arch`` at ``batch`` images, compute and stall apart.

    Parameters
    ----------
    arch : dict
        A manifest's ``architecture`` (or a config's ``model`` completed like one).
    batch : int
        Images a layer's weights serve per fetch.
    lanes, stem_lanes : int
        The core's lanes and the stem engine's (default ``lanes``).
    steps : float
        Active steps per layer (the learned masks' mean: 2 of 4 for the recipes here).
    spike_rate, pixel_rate : float
        Shares of the spike maps' bits and of the pixels' bit-plane bits that are set.
    bytes_per_cycle, latency : float, int
        What the board's DDR moves a cycle at the accelerator's clock, and a fetch's latency.
    input_buffer : int
        Bytes on chip for a layer's inputs (the batch's spike maps or stream values): when
        they fit they are read once, else once per tile of output channels.
    stream_bits : int
        Bits of a residual-stream value ``X`` in DDR.
    measured : tuple of dict, optional
        Spike rates by LIF layer and active steps by module (:func:`golden_rates`), in place
        of ``spike_rate`` and ``steps`` where they have the layer.

    Returns
    -------
    dict
        ``cycles``, ``compute``, ``stall`` per image (the layers one after the other: an
        image's latency), ``stem_cycles`` and ``core_cycles`` (its stem engine's layers and
        the core's, compute and stall), ``stream_cycles`` (the larger of the two: an image's
        share of a stream, where the built design overlaps the stem of the next image with
        the core), ``weight_bytes`` and ``activation_bytes`` per image, and ``layers``
        (each :class:`LayerCycles` as a dict).
    """
    if batch < 1 or lanes < 1 or (stem_lanes is not None and stem_lanes < 1):
        raise ValueError("batch and lanes must be at least 1")
    reach = widest_reach(stem_stages(arch["image_shape"], arch["stem"])) if arch.get("stem") \
        else 1
    measured_rates, measured_steps = measured or ({}, {})
    works = layer_works(arch, stream_bits)
    rows = [layer_cycles(layer, batch=batch, lanes=lanes, stem_lanes=stem_lanes or lanes,
                         reach=reach, steps=measured_steps.get(layer.module, steps),
                         spike_rate=measured_rates.get(
                             layer.source, pixel_rate if layer.once else spike_rate),
                         bytes_per_cycle=bytes_per_cycle, latency=latency,
                         input_buffer=input_buffer)
            for layer in works]
    compute = sum(row.compute for row in rows)
    stall = sum(row.stall for row in rows)
    engines = {engine: sum(row.compute + row.stall for row, work in zip(rows, works)
                           if work.engine == engine) for engine in ("stem", "core")}
    return {"batch": batch, "lanes": lanes, "stem_lanes": stem_lanes or lanes,
            "cycles": compute + stall, "compute": compute, "stall": stall,
            "stem_cycles": engines["stem"], "core_cycles": engines["core"],
            # the built design streams images through the stem engine and the core at
            # once (the stem on the next image while the core computes this one): a stream
            # of images costs each the slower of the two
            "stream_cycles": max(engines.values()),
            "weight_bytes": sum(row.weight_bytes for row in rows),
            "activation_bytes": sum(row.activation_bytes for row in rows),
            "layers": [asdict(row) for row in rows]}


def golden_rates(export: Any, images: Any, budget: int | None = None
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Return the spike rates of ``export``'s LIF layers and its modules' active steps.

    A layer's rate is the spikes it hands on for ``images`` (golden model, at ``budget``)
    over their positions and its module's active steps: the share of its map's bits set
    at an active step (a stem stage that pools after its LIF: of its pooled map). The
    pixels' rate (``"pixels"``) is the share of their bit-plane bits set.
    """
    import numpy as np

    from stepvit.model.golden import GoldenModel

    golden = GoldenModel(export)
    result = golden.run(images, budget)
    state = golden.new_state(1)
    steps = {name: float(row.sum()) for name, row in zip(export.module_names, result.mask)}
    totals = {name: (float(counts.sum()), state.membranes[name][0].numel())
              for name, counts in result.spikes.items()}
    if export.arch.get("stem"):
        # a stage that pools after its LIF hands on the OR of each window
        maps, _ = golden.stem_emitted(images, result.mask)
        for index, stage in enumerate(golden.stem):
            totals[stage.name] = (float(sum(float(emitted.sum()) for (module, _), emitted
                                            in maps.items() if module == index)),
                                  int(np.prod(stage.out_shape)))
    rates = {"pixels": float(np.unpackbits(np.asarray(images, dtype=np.uint8)).mean())}
    for name, (spikes, positions) in totals.items():
        module = next(module for module in sorted(steps, key=len, reverse=True)
                      if name == module or name.startswith(module + "."))
        rates[name] = spikes / (len(images) * positions * (steps[module] or 1.0))
    return rates, steps


def main(argv: list[str] | None = None) -> None:
    """Print the plan of a config's or an export's network per batch, as JSON lines.

    The memory figures are ``--bytes-per-cycle`` and ``--latency`` where given, else those
    of ``--board`` (its ``board.yaml``'s ``ddr`` section), else the PYNQ-Z2's defaults.

    For an export the spike rates and active steps come from its golden model on its
    golden-vector images (else ``--images`` random ones); for a config, ``--spike-rate``
    and ``--steps`` stand for every layer.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a training config (YAML) or an export folder")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--lanes", type=int, default=32)
    parser.add_argument("--stem-lanes", type=int, default=None)
    parser.add_argument("--steps", type=float, default=2.0)
    parser.add_argument("--spike-rate", type=float, default=0.25)
    parser.add_argument("--images", type=int, default=4,
                        help="random images for an export without golden vectors")
    parser.add_argument("--board", default=None,
                        help="take --bytes-per-cycle and --latency from the board.yaml "
                             "ddr figures of this board (a flag given still overrides)")
    parser.add_argument("--bytes-per-cycle", type=float, default=None,
                        help=f"default: the board's, else {DEFAULT_BYTES_PER_CYCLE:g}")
    parser.add_argument("--latency", type=int, default=None,
                        help=f"default: the board's, else {DEFAULT_LATENCY}")
    parser.add_argument("--input-buffer", type=int, default=65_536)
    args = parser.parse_args(argv)
    bytes_per_cycle, latency = memory_figures(args.board, args.bytes_per_cycle, args.latency)
    arch, measured, stream_bits = architecture_of(args.source), None, 15
    if Path(args.source).is_dir():
        export, images = export_images(args.source, args.images)
        measured, stream_bits = golden_rates(export, images), export.bit_widths["stream"]
    for batch in (int(b) for b in args.batch.split(",")):
        result = plan(arch, batch=batch, lanes=args.lanes, stem_lanes=args.stem_lanes,
                      steps=args.steps, spike_rate=args.spike_rate,
                      bytes_per_cycle=bytes_per_cycle, latency=latency,
                      input_buffer=args.input_buffer, stream_bits=stream_bits,
                      measured=measured)
        result.pop("layers")
        result.update(bytes_per_cycle=bytes_per_cycle, latency=latency)
        print(json.dumps({key: round(value, 1) if isinstance(value, float) else value
                          for key, value in result.items()}))


def memory_figures(board: str | None, bytes_per_cycle: float | None,
                   latency: int | None) -> tuple[float, int]:
    """Return the bytes a cycle and the latency: the flags', else the board's, else defaults.

    Parameters
    ----------
    board : str or None
        A board name or folder (``board.yaml``'s ``ddr`` section), or none.
    bytes_per_cycle, latency : float or None, int or None
        The flags' values, ``None`` where not given.

    Raises
    ------
    StepvitError
        If the board is unknown or its ``ddr`` figures are bad.
    """
    if board is not None:
        from stepvit.rtl.boards import load_board

        ddr = load_board(board).memory()
        bytes_per_cycle = ddr.bytes_per_cycle if bytes_per_cycle is None else bytes_per_cycle
        latency = ddr.latency_cycles if latency is None else latency
    return (DEFAULT_BYTES_PER_CYCLE if bytes_per_cycle is None else bytes_per_cycle,
            DEFAULT_LATENCY if latency is None else latency)


def export_images(folder: str, count: int) -> tuple[Any, Any]:
    """Return an export and its golden-vector images (else ``count`` random ones)."""
    import numpy as np

    from stepvit.model.export import StepvitError, load_export
    from stepvit.model.export.vectors import load_golden_vectors

    export = load_export(folder)
    try:
        return export, load_golden_vectors(export).images
    except StepvitError:
        shape = (count, *export.arch["image_shape"])
        return export, np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def architecture_of(source: str) -> dict[str, Any]:
    """Return the architecture of an export folder, or of a training config's model."""
    if Path(source).is_dir():
        from stepvit.model.export import load_export

        return load_export(source).arch
    from stepvit.model.config import load_config
    from stepvit.model.data import image_shape

    config = load_config(source)
    model = dict(config["model"])
    shape = image_shape(config["data"]["dataset"])
    if model.get("stem"):
        from stepvit.model.export.stem import stem_tokens

        model["stem"] = complete_stem(model["stem"])
        tokens = stem_tokens(shape, model["stem"])[0]
    else:
        tokens = (shape[1] // model["patch"]) * (shape[2] // model["patch"])
    classes = {"cifar100": 100}.get(config["data"]["dataset"], 10)
    return {**model, "image_shape": list(shape), "tokens": tokens, "num_classes": classes}


if __name__ == "__main__":
    from stepvit.model.export import StepvitError

    try:
        main()
    except StepvitError as error:
        raise SystemExit(f"ddr_plan: error: {error}") from None


__all__ = ["CHANNEL_BYTES", "DEFAULT_BYTES_PER_CYCLE", "DEFAULT_LATENCY", "LayerCycles",
           "LayerWork", "architecture_of", "golden_rates", "layer_cycles", "layer_works",
           "memory_figures", "plan", "stem_source"]
