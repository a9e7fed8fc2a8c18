"""The integer golden model (SPEC.md section 3): what the accelerator computes, bit for bit.

Everything here runs on ``torch.int64`` tensors, batched over images; there is no float in
the integer path. :class:`GoldenModel` is built from a validated
:class:`~stepvit.model.export.Export` and returns logits, the predicted class, the spike count
of every LIF layer at every step (SPEC.md section 1 layer order) and the work it did.

:meth:`GoldenModel.run` is the step loop of SPEC.md section 3: one method per module
(``embed_step``, ``attention_step``, ``mlp_step``, ``head_step``), each the integer twin of
that module's ``forward`` in :mod:`stepvit.model.network`, carries a :class:`BatchState`
from step to step; the work is counted afterwards from what the run recorded
(:meth:`GoldenModel.count_work`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stepvit.model.export import Export, budget_mask_of
from stepvit.model.export import worst_case_bounds as _bounds_of_arrays
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.stem import (
    StemStage,
    dense_stem_ac_ops,
    first_layer_macs,
    stem_stages,
)
from stepvit.model.lif import reset_membrane

#: Bits of one popcount word in the Q·Kᵀ form's work count.
POPCOUNT_WORD_BITS = 32
ATTENTION_FORMS = ("kv", "qk")


def worst_case_bounds(export: Export) -> dict[str, int]:
    """Return the worst-case magnitude of each bit-width class of ``export``.

    See :func:`stepvit.model.export.worst_case_bounds` for the proofs; the export writer
    derives ``bit_widths`` from these bounds and the reader checks them.
    """
    return _bounds_of_arrays(export.manifest, export.arrays)


def lif_step(
    membrane: torch.Tensor,
    current: torch.Tensor,
    threshold: torch.Tensor,
    leak_shift: int,
    reset: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance an integer LIF layer by one active step.

    ``H = V - (V >> k) + I``; ``S = H >= threshold``; then
    :func:`stepvit.model.lif.reset_membrane`, the one reset rule.

    Parameters
    ----------
    membrane : torch.Tensor
        ``V`` from the previous active step (int64, channels last).
    current : torch.Tensor
        ``I`` of this step, broadcastable to ``membrane``.
    threshold : torch.Tensor
        Per channel (last axis), int64, at least 1.
    leak_shift : int
        ``k``; the leak is an arithmetic shift, so it rounds toward minus infinity.
    reset : str
        ``"hard"`` or ``"soft"``.

    Returns
    -------
    tuple of torch.Tensor
        The new membrane and the spikes (int64 0/1).
    """
    charged = membrane - (membrane >> leak_shift) + current
    fired = (charged >= threshold).to(torch.int64)
    return reset_membrane(charged, fired, threshold, reset), fired


def ac_ops_of(spikes: dict[str, torch.Tensor], kv_pairs: dict[str, torch.Tensor], *,
              depth: int, dim: int, head_dim: int, mlp_dim: int,
              num_classes: int) -> torch.Tensor:
    """Return the accumulates of each image ``[B]`` (SPEC.md section 3, "Work counted").

    One accumulate per selected weight: for every linear layer, input spikes x out features;
    attention ``Σ_{m,h} |K_mh|·|V_mh|`` (Kᵀ·V) plus ``Σ_{n,h} |Q_nh|·d`` (Q·KV); head spikes
    x K. The golden model counts its integer run with it, :mod:`stepvit.model.metrics` the
    float model's trace.

    Parameters
    ----------
    spikes : dict of str to torch.Tensor
        LIF layer -> ``[B, T]`` spikes at each step.
    kv_pairs : dict of str to torch.Tensor
        Attention module (``blocks.i.attn``) -> ``[B, T]`` Kᵀ·V accumulates at each step.
    depth, dim, head_dim, mlp_dim, num_classes : int
        The architecture (SPEC.md section 1).
    """
    total = spikes["head.in"].sum(dim=1) * num_classes
    for block in range(depth):
        attn, mlp = f"blocks.{block}.attn", f"blocks.{block}.mlp"
        total = total + spikes[f"{attn}.in"].sum(dim=1) * 3 * dim
        total = total + kv_pairs[attn].sum(dim=1) + spikes[f"{attn}.q"].sum(dim=1) * head_dim
        total = total + spikes[f"{attn}.attn"].sum(dim=1) * dim
        total = total + spikes[f"{mlp}.in"].sum(dim=1) * mlp_dim
        total = total + spikes[f"{mlp}.fc1"].sum(dim=1) * dim
    return total


def dense_ac_ops_of(*, tokens: int, depth: int, dim: int, head_dim: int, mlp_dim: int,
                    num_classes: int, t_max: int) -> int:
    """Return the accumulates of one image with every spike 1 and every step of ``T`` active."""
    n, d, m, hd = tokens, dim, mlp_dim, head_dim
    per_block = 4 * n * d * d + 2 * n * d * hd + 2 * n * d * m
    return t_max * (depth * per_block + n * d * num_classes)


@dataclass(frozen=True, eq=False)
class GoldenResult:
    """What the golden model computed for a batch of ``B`` images.

    Attributes
    ----------
    logits : torch.Tensor
        int64 ``[B, K]``.
    predicted : torch.Tensor
        int64 ``[B]``: first index of the largest logit.
    spikes : dict of str to torch.Tensor
        Layer name -> int64 ``[B, T]``: spikes of that layer at each step, summed over
        tokens and channels. Keys in SPEC.md section 1 order.
    work : dict of str to torch.Tensor
        int64 ``[B]`` each: ``ac_ops``, ``embed_ac_ops``, ``mac_ops``, ``dense_ac_ops``,
        ``popcount_words`` (the Q·Kᵀ form's 32-bit popcounts), ``active_steps`` (sum over
        modules of the steps they ran).
    mask : numpy.ndarray
        The mask that ran, uint8 ``[2L + 2, T]``.
    """

    logits: torch.Tensor
    predicted: torch.Tensor
    spikes: dict[str, torch.Tensor]
    work: dict[str, torch.Tensor]
    mask: np.ndarray

    @property
    def layer_names(self) -> list[str]:
        """LIF layer names in SPEC.md section 1 order."""
        return list(self.spikes)

    def layer_spike_totals(self) -> torch.Tensor:
        """Return int64 ``[B, layers]``: spikes per layer over all steps (the hardware's words)."""
        return torch.stack([counts.sum(dim=1) for counts in self.spikes.values()], dim=1)


@dataclass(eq=False)
class BatchState:
    """What a batch carries from one time step to the next, and what it has recorded.

    Attributes
    ----------
    membranes : dict of str to torch.Tensor
        LIF layer -> int64 ``[B, N, channels]``: its membrane ``V``.
    spikes : dict of str to torch.Tensor
        LIF layer -> int64 ``[B, T]``: the spikes it fired at each step.
    kv_pairs : dict of str to torch.Tensor
        Attention module (``blocks.i.attn``) -> int64 ``[B, T]``: the accumulates of its
        ``Kᵀ·V`` at each step.
    stem_ac_ops : torch.Tensor
        int64 ``[B, T]``: the accumulates of the stem's convolutions on spikes at each step
        (SPEC.md section 5); zeros without a stem.
    """

    membranes: dict[str, torch.Tensor]
    spikes: dict[str, torch.Tensor]
    kv_pairs: dict[str, torch.Tensor]
    stem_ac_ops: torch.Tensor


def conv2d_int(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
               stride: int, padding: int) -> torch.Tensor:
    """Return the zero-padded integer convolution of ``[B, C, H, W]`` (int64, exact).

    One weight slice ``W[:, :, ky, kx]`` per kernel offset, added over the input shifted
    by that offset: the sum of selected weights a spike (or a pixel bit) scatters.
    """
    batch, _, height, width = inputs.shape
    out_channels, _, kernel, _ = weight.shape
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    padded = torch.nn.functional.pad(inputs, (padding,) * 4)
    out = torch.zeros(batch, out_channels, out_h, out_w, dtype=torch.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            window = padded[:, :, ky:ky + stride * (out_h - 1) + 1:stride,
                            kx:kx + stride * (out_w - 1) + 1:stride]
            out += torch.einsum("oc,bchw->bohw", weight[:, :, ky, kx], window)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def max_pool_int(maps: torch.Tensor, *, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """Return the max-pool of int64 ``[B, C, H, W]``; the padding is never a candidate.

    On 0/1 spikes it is the OR over the window.
    """
    _, _, height, width = maps.shape
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    lowest = torch.iinfo(torch.int64).min
    padded = torch.nn.functional.pad(maps, (padding,) * 4, value=lowest)
    out = torch.full((*maps.shape[:2], out_h, out_w), lowest, dtype=torch.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            out = torch.maximum(out, padded[:, :, ky:ky + stride * (out_h - 1) + 1:stride,
                                            kx:kx + stride * (out_w - 1) + 1:stride])
    return out


def as_image_tensor(images: Any, image_shape: list[int]) -> torch.Tensor:
    """Return ``images`` (numpy or torch, uint8 ``[B, C, H, W]``) as an int64 tensor.

    Raises
    ------
    StepvitError
        If the shape or dtype is not that of the export's images.
    """
    tensor = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) \
        else images
    if tensor.dtype != torch.uint8:
        raise StepvitError(f"images must be uint8, got {tensor.dtype}")
    if tensor.dim() != 4 or list(tensor.shape[1:]) != list(image_shape):
        raise StepvitError(
            f"images must have shape [B, {', '.join(map(str, image_shape))}], "
            f"got {list(tensor.shape)}"
        )
    return tensor.to(torch.int64)


class GoldenModel:
    """The integer network of an export.

    Parameters
    ----------
    export : Export
        A validated export.
    attention_form : str
        ``"kv"`` computes ``Q·(Kᵀ·V)`` (O(N·d²), what the hardware does); ``"qk"`` computes
        ``popcount(Q & K)·V`` (O(N²·d)). Integer arithmetic makes them identical.
    """

    def __init__(self, export: Export, *, attention_form: str = "kv") -> None:
        if attention_form not in ATTENTION_FORMS:
            raise StepvitError(
                f"attention_form must be one of {', '.join(ATTENTION_FORMS)}, "
                f"got {attention_form!r}"
            )
        self.export = export
        self.attention_form = attention_form
        arch = export.arch
        self.image_shape = list(arch["image_shape"])
        self.patch = arch["patch"]
        self.tokens = arch["tokens"]
        self.dim = arch["dim"]
        self.heads = arch["heads"]
        self.head_dim = self.dim // self.heads
        self.depth = arch["depth"]
        self.mlp_dim = arch["mlp_dim"]
        self.num_classes = arch["num_classes"]
        self.t_max = export.t_max
        neuron = export.neuron
        self.leak_shift = int(neuron["leak_shift"])
        self.reset = neuron["reset"]
        self.weights = {key: torch.from_numpy(value.astype(np.int64))
                        for key, value in export.arrays.items()}
        self.thresholds = {name: torch.from_numpy(values)
                           for name, values in export.thresholds.items()}
        self.layer_names = export.layer_names()
        self.module_names = export.module_names
        #: The stem's modules (stages, then the RPE); empty without a stem.
        self.stem: list[StemStage] = stem_stages(self.image_shape, arch["stem"]) \
            if arch.get("stem") else []
        self.pool = dict(arch["stem"]["pool"]) if self.stem else {}
        #: Stem module -> ``[H, W]``: the conv outputs each input position reaches.
        self.reach = {stage.name: torch.from_numpy(stage.reach()) for stage in self.stem}
        #: Mask row of the first block's attention module.
        self.first_block_row = len(self.module_names) - 2 * self.depth - 1

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``[B, N, C·p·p]`` patch vectors (row-major patches, ``(c, ky, kx)`` inside)."""
        batch, channels, height, width = images.shape
        p = self.patch
        grid = images.reshape(batch, channels, height // p, p, width // p, p)
        return grid.permute(0, 2, 4, 1, 3, 5).reshape(batch, self.tokens, channels * p * p)

    def embed_current(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the embedding current ``[B, N, D]`` and the set pixel bits per image.

        Shift-and-add over the 8 bit planes: each plane is a 0/1 map, so each plane's
        product with the weights is a sum of selected weights, shifted by the plane index.
        """
        patches = self.patches(images)
        weight_t = self.weights["embed.weight"].T
        current = self.weights["embed.bias"].expand(patches.shape[0], -1, -1).clone()
        set_bits = torch.zeros(patches.shape[0], dtype=torch.int64)
        for bit in range(8):
            plane = (patches >> bit) & 1
            current += (plane @ weight_t) << bit
            set_bits += plane.sum(dim=(1, 2))
        return current, set_bits

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Return ``Y [B, N, D]`` of binary ``q``, ``k``, ``v`` ``[B, N, D]`` per head."""
        batch = q.shape[0]
        shape = (batch, self.tokens, self.heads, self.head_dim)
        q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
        if self.attention_form == "kv":
            key_value = torch.einsum("bmhi,bmhj->bhij", k, v)
            out = torch.einsum("bnhi,bhij->bnhj", q, key_value)
        else:
            overlap = torch.einsum("bnhi,bmhi->bhnm", q, k)  # popcount(q AND k)
            out = torch.einsum("bhnm,bmhj->bnhj", overlap, v)
        return out.reshape(batch, self.tokens, self.dim)

    def dense_ac_ops(self) -> int:
        """Accumulates of one image with every spike 1 and every step of ``T`` active.

        With a stem, its convolutions on spikes count too (every input position spiking).
        """
        return dense_ac_ops_of(tokens=self.tokens, depth=self.depth, dim=self.dim,
                               head_dim=self.head_dim, mlp_dim=self.mlp_dim,
                               num_classes=self.num_classes, t_max=self.t_max) \
            + self.t_max * dense_stem_ac_ops(self.stem)

    def kv_accumulates(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Return ``[B]``: ``Σ_{m,h} |K_mh|·|V_mh|``, the accumulates of ``Kᵀ·V``, of one step."""
        shape = (k.shape[0], self.tokens, self.heads, self.head_dim)
        return (k.reshape(shape).sum(dim=3) * v.reshape(shape).sum(dim=3)).sum(dim=(1, 2))

    def checked_mask(self, masks: np.ndarray | None) -> np.ndarray:
        """Return ``masks`` (or the trained mask if None) as uint8, refusing a bad one.

        Raises
        ------
        StepvitError
            If ``masks`` is not 0/1 of shape ``[2L + 2, T]``.
        """
        base = self.export.timestep_mask if masks is None else np.asarray(masks, dtype=np.uint8)
        expected_shape = (len(self.module_names), self.t_max)
        if base.shape != expected_shape or not np.isin(base, (0, 1)).all():
            raise StepvitError(f"masks must be 0/1 with shape {list(expected_shape)}, "
                               f"got shape {list(base.shape)}")
        return base

    def new_state(self, batch: int) -> BatchState:
        """Return the state of ``batch`` images before the first step: every membrane 0."""
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.int64)

        shapes = {stage.name: stage.lif_shape for stage in self.stem}
        return BatchState(
            membranes={name: zeros(batch, *shapes[name]) if name in shapes
                       else zeros(batch, self.tokens, len(self.thresholds[name]))
                       for name in self.layer_names},
            spikes={name: zeros(batch, self.t_max) for name in self.layer_names},
            kv_pairs={f"blocks.{block}.attn": zeros(batch, self.t_max)
                      for block in range(self.depth)},
            stem_ac_ops=zeros(batch, self.t_max),
        )

    def lif(self, state: BatchState, name: str, current: torch.Tensor,
            step: int) -> torch.Tensor:
        """Advance LIF layer ``name`` by one active step; record and return its spikes.

        Token layers are ``[B, N, channels]``; the stem's maps ``[B, C, H, W]`` (its
        thresholds per channel, the first axis after the batch).
        """
        threshold = self.thresholds[name]
        if current.dim() == 4:
            threshold = threshold.view(-1, 1, 1)
        state.membranes[name], fired = lif_step(
            state.membranes[name], current, threshold, self.leak_shift, self.reset
        )
        state.spikes[name][:, step] = fired.flatten(1).sum(dim=1)
        return fired

    def linear(self, name: str, inputs: torch.Tensor) -> torch.Tensor:
        """Return ``inputs @ Wᵀ + b`` of layer ``name``."""
        return inputs @ self.weights[f"{name}.weight"].T + self.weights[f"{name}.bias"]

    def pooled(self, maps: torch.Tensor) -> torch.Tensor:
        """Return the stem's max-pool of ``[B, C, H, W]`` (an OR on spikes)."""
        return max_pool_int(maps, **self.pool)

    def stem_conv(self, stage: StemStage, inputs: torch.Tensor) -> torch.Tensor:
        """Return stem module ``stage``'s current from its inputs (pooled if before its LIF)."""
        current = conv2d_int(inputs, self.weights[f"{stage.name}.weight"],
                             self.weights[f"{stage.name}.bias"], stride=stage.stride,
                             padding=stage.padding)
        return self.pooled(current) if stage.pool == "before" else current

    def stem_current(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return stage 0's current ``[B, C0, ...]`` and its accumulates per image (SPEC §5).

        Shift-and-add over the 8 bit planes, once per image; each set bit at ``(y, x)``
        adds ``Cout`` weights at each of the ``reach[y, x]`` positions it feeds.
        """
        first = self.stem[0]
        weight = self.weights[f"{first.name}.weight"]
        current = torch.zeros(images.shape[0], *first.conv_shape, dtype=torch.int64)
        bits = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.int64)
        for bit in range(8):
            plane = (images >> bit) & 1
            current += conv2d_int(plane, weight, None, stride=first.stride,
                                  padding=first.padding) << bit
            bits += plane.sum(dim=1)
        current += self.weights[f"{first.name}.bias"].view(1, -1, 1, 1)
        accumulates = (bits * self.reach[first.name]).sum(dim=(1, 2)) * first.conv_shape[0]
        return (self.pooled(current) if first.pool == "before" else current), accumulates

    def stem_module(self, state: BatchState, index: int, inputs: torch.Tensor,
                    step: int) -> torch.Tensor:
        """Run stem module ``index`` (not stage 0) for one step; return the spikes it emits."""
        stage = self.stem[index]
        state.stem_ac_ops[:, step] += (inputs * self.reach[stage.name]).sum(
            dim=(1, 2, 3)) * stage.conv_shape[0]
        fired = self.lif(state, stage.name, self.stem_conv(stage, inputs), step)
        return self.pooled(fired) if stage.pool == "after" else fired

    @property
    def stem_conv_stages(self) -> int:
        """The stem's conv stages (its modules but the RPE)."""
        return len(self.stem) - int(self.stem[-1].name == "stem.rpe")

    def stem_emit(self, state: BatchState, index: int, first_current: torch.Tensor,
                  inputs: torch.Tensor | None, step: int) -> torch.Tensor:
        """Run stem module ``index`` at ``step``; return the spikes it hands on.

        Stage 0 fires on ``first_current`` (pooled after its LIF if it pools there); a
        later module convolves ``inputs``, the spikes of the module it reads.
        """
        if index == 0:
            fired = self.lif(state, self.stem[0].name, first_current, step)
            return self.pooled(fired) if self.stem[0].pool == "after" else fired
        return self.stem_module(state, index, inputs, step)

    def stem_step(self, state: BatchState, mask: np.ndarray, first_current: torch.Tensor,
                  step: int) -> torch.Tensor:
        """Run the stem for one step; return the stream ``X = E · (S_last + R)`` ``[B, N, D]``.

        A masked module hands on zeros (SPEC.md section 5).
        """
        stages = self.stem_conv_stages
        spikes = None
        for index, stage in enumerate(self.stem[:stages]):
            if not mask[index, step]:
                spikes = torch.zeros(first_current.shape[0], *stage.out_shape,
                                     dtype=torch.int64)
            else:
                spikes = self.stem_emit(state, index, first_current, spikes, step)
        tokens = spikes
        if stages < len(self.stem) and mask[stages, step]:
            tokens = spikes + self.stem_module(state, stages, spikes, step)
        return tokens.flatten(2).transpose(1, 2) * self.weights["stream_spike"]

    def embed_step(self, state: BatchState, current: torch.Tensor, step: int) -> torch.Tensor:
        """Run module ``embed`` for one step; return the stream ``X = E · S_e`` ``[B, N, D]``."""
        return self.lif(state, "embed", current, step) * self.weights["stream_spike"]

    def attention_step(self, state: BatchState, module: str, x: torch.Tensor,
                       step: int) -> torch.Tensor:
        """Run attention module ``module`` for one step; return what it adds to ``X``."""
        s = self.lif(state, f"{module}.in", x, step)
        q, k, v = (self.lif(state, f"{module}.{name}", self.linear(f"{module}.{name}", s), step)
                   for name in ("q", "k", "v"))
        state.kv_pairs[module][:, step] = self.kv_accumulates(k, v)
        a = self.lif(state, f"{module}.attn", self.attention(q, k, v), step)
        return self.linear(f"{module}.proj", a)

    def mlp_step(self, state: BatchState, module: str, x: torch.Tensor,
                 step: int) -> torch.Tensor:
        """Run MLP module ``module`` for one step; return what it adds to ``X``."""
        s = self.lif(state, f"{module}.in", x, step)
        hidden = self.lif(state, f"{module}.fc1", self.linear(f"{module}.fc1", s), step)
        return self.linear(f"{module}.fc2", hidden)

    def head_step(self, state: BatchState, x: torch.Tensor, step: int) -> torch.Tensor:
        """Run module ``head`` for one step; return its spikes per channel ``Σ_n S[n, c]``."""
        return self.lif(state, "head.in", x, step).sum(dim=1)

    def run(
        self,
        images: Any,
        budget: int | None = None,
        masks: np.ndarray | None = None,
    ) -> GoldenResult:
        """Run a batch of images through the integer network, step by step (SPEC.md section 3).

        Parameters
        ----------
        images : numpy.ndarray or torch.Tensor
            uint8 ``[B, C, H, W]``.
        budget : int, optional
            Each module keeps only its first ``budget`` active steps (SPEC.md section 3).
        masks : numpy.ndarray, optional
            0/1 ``[2L + 2, T]`` to run instead of the trained mask (the budget then caps it).

        Returns
        -------
        GoldenResult
        """
        pixels = as_image_tensor(images, self.image_shape)
        mask = budget_mask_of(self.checked_mask(masks), budget, self.export.stem_modules)
        batch = pixels.shape[0]
        if self.stem:
            embed_current, first_work = self.stem_current(pixels)
        else:
            embed_current, set_bits = self.embed_current(pixels)
            first_work = set_bits * self.dim
        state = self.new_state(batch)
        counts = torch.zeros(batch, self.dim, dtype=torch.int64)
        first = self.first_block_row
        for step in range(self.t_max):
            if self.stem:
                x = self.stem_step(state, mask, embed_current, step)
            elif mask[0, step]:
                x = self.embed_step(state, embed_current, step)
            else:
                x = torch.zeros(batch, self.tokens, self.dim, dtype=torch.int64)
            for block in range(self.depth):
                if mask[first + 2 * block, step]:
                    x = x + self.attention_step(state, f"blocks.{block}.attn", x, step)
                if mask[first + 1 + 2 * block, step]:
                    x = x + self.mlp_step(state, f"blocks.{block}.mlp", x, step)
            if mask[-1, step]:
                counts += self.head_step(state, x, step)
        return self.result(state, mask, counts, first_work)

    def run_module_major(self, images: Any, budget: int | None = None,
                         masks: np.ndarray | None = None) -> GoldenResult:
        """Run as :meth:`run` does, but one module at a time over all its steps.

        The order of a design that streams each module's weights from DDR once for every
        step (docs/ddr-dataflow.md). A module's state is its own LIFs' membranes, and at a
        step it reads only what the modules before it emitted at that step, so the result
        is :meth:`run`'s, bit for bit (tests/model/test_golden_schedule.py holds the two to
        each other). The arguments are :meth:`run`'s.
        """
        pixels = as_image_tensor(images, self.image_shape)
        mask = budget_mask_of(self.checked_mask(masks), budget, self.export.stem_modules)
        batch, steps = pixels.shape[0], range(self.t_max)
        state = self.new_state(batch)
        if self.stem:
            first_current, first_work = self.stem_current(pixels)
            xs = self._stem_module_major(state, mask, first_current)
        else:
            embed_current, set_bits = self.embed_current(pixels)
            first_work = set_bits * self.dim
            xs = [self.embed_step(state, embed_current, step) if mask[0, step]
                  else torch.zeros(batch, self.tokens, self.dim, dtype=torch.int64)
                  for step in steps]
        row = self.first_block_row
        for block in range(self.depth):
            for name, module_step in (("attn", self.attention_step), ("mlp", self.mlp_step)):
                for step in steps:
                    if mask[row, step]:
                        xs[step] = xs[step] + module_step(state, f"blocks.{block}.{name}",
                                                          xs[step], step)
                row += 1
        counts = torch.zeros(batch, self.dim, dtype=torch.int64)
        for step in steps:
            if mask[-1, step]:
                counts += self.head_step(state, xs[step], step)
        return self.result(state, mask, counts, first_work)

    def _stem_module_major(self, state: BatchState, mask: np.ndarray,
                           first_current: torch.Tensor) -> list[torch.Tensor]:
        """Run the stem one module at a time over all steps; return each step's stream."""
        stages = self.stem_conv_stages
        maps: list[torch.Tensor] = []
        for index, stage in enumerate(self.stem[:stages]):
            maps = [self.stem_emit(state, index, first_current, maps[step] if index else None,
                                   step) if mask[index, step]
                    else torch.zeros(first_current.shape[0], *stage.out_shape,
                                     dtype=torch.int64)
                    for step in range(self.t_max)]
        tokens = list(maps)
        for step in range(self.t_max):
            if stages < len(self.stem) and mask[stages, step]:
                tokens[step] = maps[step] + self.stem_module(state, stages, maps[step], step)
        return [t.flatten(2).transpose(1, 2) * self.weights["stream_spike"] for t in tokens]

    def stem_emitted(self, images: Any, mask: np.ndarray
                     ) -> tuple[dict[tuple[int, int], torch.Tensor], torch.Tensor]:
        """Return the spike maps each stem module hands on, and the stem's accumulates.

        ``maps[(module, step)]`` is ``[B, C, H, W]`` at each active step of the module (the
        pooled map of a stage that pools after its LIF); the accumulates are per image
        (``embed_ac_ops + stem_ac_ops``). The order is :meth:`stem_step`'s, its functions
        too; ``mask`` is a full ``[modules, T]`` 0/1 mask (budgets already applied).
        """
        pixels = as_image_tensor(images, self.image_shape)
        first_current, first_work = self.stem_current(pixels)
        state = self.new_state(len(pixels))
        last = self.stem_conv_stages - 1
        maps: dict[tuple[int, int], torch.Tensor] = {}
        for step in range(self.t_max):
            for index, stage in enumerate(self.stem):
                if not mask[index, step]:
                    continue
                inputs = None
                if index:
                    source = last if stage.name == "stem.rpe" else index - 1
                    inputs = maps.get((source, step), torch.zeros(
                        len(pixels), *stage.in_shape, dtype=torch.int64))
                maps[(index, step)] = self.stem_emit(state, index, first_current, inputs, step)
        return maps, first_work + state.stem_ac_ops.sum(dim=1)

    def result(self, state: BatchState, mask: np.ndarray, counts: torch.Tensor,
               first_work: torch.Tensor) -> GoldenResult:
        """Return the result of a run: the head's logits from its spike ``counts``."""
        logits = counts @ self.weights["head.weight"].T + self.weights["head.bias"]
        return GoldenResult(
            logits=logits,
            predicted=torch.argmax(logits, dim=1),
            spikes=state.spikes,
            work=self.count_work(state, mask, first_work),
            mask=mask,
        )

    def count_work(self, state: BatchState, mask: np.ndarray,
                   first_work: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the work of each image (SPEC.md section 3, "Work counted").

        Parameters
        ----------
        state : BatchState
            The state after the last step: the spikes and Kᵀ·V accumulates it recorded.
        mask : numpy.ndarray
            The mask that ran.
        first_work : torch.Tensor
            int64 ``[B]``: the first layer's accumulates (``embed_ac_ops``): set pixel bits
            times ``D``, or with a stem the set bits times the positions they reach.

        Returns
        -------
        dict of str to torch.Tensor
            int64 ``[B]`` each, the keys of :attr:`GoldenResult.work` (``stem_ac_ops`` too
            with a stem).
        """
        attention_steps = int(mask[self.first_block_row:-1:2].sum())
        words_per_popcount = -(-self.head_dim // POPCOUNT_WORD_BITS)

        def per_image(value: int) -> torch.Tensor:
            return torch.full((len(first_work),), value, dtype=torch.int64)

        transformer = ac_ops_of(state.spikes, state.kv_pairs, depth=self.depth, dim=self.dim,
                                head_dim=self.head_dim, mlp_dim=self.mlp_dim,
                                num_classes=self.num_classes)
        stem = {"stem_ac_ops": state.stem_ac_ops.sum(dim=1)} if self.stem else {}
        return {
            "ac_ops": transformer + state.stem_ac_ops.sum(dim=1),
            **stem,
            "embed_ac_ops": first_work,
            "mac_ops": per_image(first_layer_macs(self.export.arch)),
            "dense_ac_ops": per_image(self.dense_ac_ops()),
            "popcount_words": per_image(
                attention_steps * self.heads * self.tokens**2 * words_per_popcount
            ),
            "active_steps": per_image(int(mask.sum())),
        }
