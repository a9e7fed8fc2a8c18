"""The integer golden model (SPEC.md section 3): what the accelerator computes, bit for bit.

Everything here runs on ``torch.int64`` tensors, batched over images; there is no float in
the integer path. :class:`GoldenModel` is built from a validated
:class:`~stepvit.model.export.Export` and returns logits, the predicted class, the spike count
of every LIF layer at every step (SPEC.md section 1 layer order) and the work it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stepvit.model.export import Export, budget_mask_of
from stepvit.model.export import worst_case_bounds as _bounds_of_arrays
from stepvit.model.export.errors import StepvitError
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
        """Accumulates of one image with every spike 1 and every step of ``T`` active."""
        n, d, m, hd = self.tokens, self.dim, self.mlp_dim, self.head_dim
        per_block = 4 * n * d * d + 2 * n * d * hd + 2 * n * d * m
        return self.t_max * (self.depth * per_block + n * d * self.num_classes)

    def run(
        self,
        images: Any,
        budget: int | None = None,
        masks: np.ndarray | None = None,
    ) -> GoldenResult:
        """Run a batch of images through the integer network.

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
        base = self.export.timestep_mask if masks is None else np.asarray(masks, dtype=np.uint8)
        expected_shape = (2 * self.depth + 2, self.t_max)
        if base.shape != expected_shape or not np.isin(base, (0, 1)).all():
            raise StepvitError(f"masks must be 0/1 with shape {list(expected_shape)}, "
                               f"got shape {list(base.shape)}")
        mask = budget_mask_of(base, budget)
        batch = pixels.shape[0]
        w, thresholds = self.weights, self.thresholds
        stream_spike = w["stream_spike"]

        def lif(name: str, current: torch.Tensor, step: int) -> torch.Tensor:
            membranes[name], fired = lif_step(
                membranes[name], current, thresholds[name], self.leak_shift, self.reset
            )
            spikes[name][:, step] = fired.sum(dim=(1, 2))
            return fired

        def linear(name: str, inputs: torch.Tensor) -> torch.Tensor:
            return inputs @ w[f"{name}.weight"].T + w[f"{name}.bias"]

        def fired_count(spike_map: torch.Tensor) -> torch.Tensor:
            return spike_map.sum(dim=tuple(range(1, spike_map.dim())))

        embed_current, set_bits = self.embed_current(pixels)
        membranes = {
            name: torch.zeros(batch, self.tokens, len(thresholds[name]), dtype=torch.int64)
            for name in self.layer_names
        }
        spikes = {name: torch.zeros(batch, self.t_max, dtype=torch.int64)
                  for name in self.layer_names}
        ac_ops = torch.zeros(batch, dtype=torch.int64)
        head_counts = torch.zeros(batch, self.dim, dtype=torch.int64)
        attention_steps = 0
        for step in range(self.t_max):
            if mask[0, step]:
                stream = lif("embed", embed_current, step) * stream_spike
            else:
                stream = torch.zeros(batch, self.tokens, self.dim, dtype=torch.int64)
            for block in range(self.depth):
                prefix = f"blocks.{block}"
                if mask[1 + 2 * block, step]:
                    attention_steps += 1
                    s_in = lif(f"{prefix}.attn.in", stream, step)
                    q, k, v = (
                        lif(f"{prefix}.attn.{name}", linear(f"{prefix}.attn.{name}", s_in), step)
                        for name in ("q", "k", "v")
                    )
                    attended = lif(f"{prefix}.attn.attn", self.attention(q, k, v), step)
                    stream = stream + linear(f"{prefix}.attn.proj", attended)
                    shape = (batch, self.tokens, self.heads, self.head_dim)
                    k_per_head = k.reshape(shape).sum(dim=3)
                    v_per_head = v.reshape(shape).sum(dim=3)
                    ac_ops += (
                        3 * fired_count(s_in) * self.dim
                        + fired_count(k_per_head * v_per_head)
                        + fired_count(q) * self.head_dim
                        + fired_count(attended) * self.dim
                    )
                if mask[2 + 2 * block, step]:
                    s_in = lif(f"{prefix}.mlp.in", stream, step)
                    hidden = lif(f"{prefix}.mlp.fc1", linear(f"{prefix}.mlp.fc1", s_in), step)
                    stream = stream + linear(f"{prefix}.mlp.fc2", hidden)
                    ac_ops += fired_count(s_in) * self.mlp_dim + fired_count(hidden) * self.dim
            if mask[-1, step]:
                head_spikes = lif("head.in", stream, step)
                head_counts += head_spikes.sum(dim=1)
                ac_ops += fired_count(head_spikes) * self.num_classes
        logits = head_counts @ w["head.weight"].T + w["head.bias"]
        channels = self.image_shape[0]
        words_per_popcount = -(-self.head_dim // POPCOUNT_WORD_BITS)

        def per_image(value: int) -> torch.Tensor:
            return torch.full((batch,), value, dtype=torch.int64)

        work = {
            "ac_ops": ac_ops,
            "embed_ac_ops": set_bits * self.dim,
            "mac_ops": per_image(self.tokens * self.dim * channels * self.patch**2),
            "dense_ac_ops": per_image(self.dense_ac_ops()),
            "popcount_words": per_image(
                attention_steps * self.heads * self.tokens**2 * words_per_popcount
            ),
            "active_steps": per_image(int(mask.sum())),
        }
        return GoldenResult(
            logits=logits,
            predicted=torch.argmax(logits, dim=1),
            spikes=spikes,
            work=work,
            mask=mask,
        )
