"""The spiking ViT whose modules learn which time steps they need (SPEC.md sections 1-2).

Mask formulation (the paper's exact one is not public; this is the choice made here):

- Granularity: one trainable score per *module* and time step, ``timestep_scores``
  ``[2L + 2, T]`` in module order ``embed, blocks.0.attn, blocks.0.mlp, ..., head``.
  A module is the unit the accelerator schedules, so a masked module-step is a stretch
  of work the hardware skips as a whole. Per-block step counts are derived (a block is
  active at t if its attn or its mlp is).
- Binary forward, straight-through backward: ``m_t = [score_t > 0]`` in the forward pass,
  ``d m_t / d score_t = sigmoid'(score_t)`` in the backward pass, so what is trained is
  exactly what runs (no soft mask to round away after training).
- A masked step *freezes* the module: every LIF in it keeps its membrane (no charge, no
  leak, no reset), fires nothing, and the module's residual branch adds nothing. Frozen
  rather than "zero input" because a leak or a bias at a masked step would be work the
  hardware had to do; frozen costs nothing and the integer golden model does the same.
- The score's gradient flows through ``m_t`` into the outputs that depend on it: the
  branch output ``m_t * branch(x)``, the spikes leaving the embedding and the head
  ``m_t * s_t'``, and the LIF updates ``m_t * (new - held) + held``. Inside a module the
  layers pass on the spikes they *would* fire (``s_t'``), so at a masked step the branch
  is what the step would add: the gradient says whether switching it on would help, and
  the BatchNorm statistics see what an active step sees (not the zeros of a silent one).
  The penalty ``mean over modules of sum_t sigmoid(score_t)`` (the expected number of
  active steps under a logistic relaxation) pushes scores down; the task loss pushes the
  useful ones up.

During training every branch is computed at every step (the gradient to a masked step's
score needs the branch output); the zero factor makes it contribute nothing forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.hooks import RemovableHandle

from stepvit.model.export import layer_names_for, module_names_for
from stepvit.model.export.reader import ATTENTION_LAYERS, MLP_LAYERS
from stepvit.model.export.stem import StemStage, complete_stem, stem_stages
from stepvit.model.lif import LIFNeuron


class StraightThroughMask(torch.autograd.Function):
    """``[score > 0]`` forward, ``sigmoid'(score)`` backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx,
                scores: torch.Tensor) -> torch.Tensor:
        """Return ``scores > 0`` as 0/1 in the scores' dtype."""
        ctx.save_for_backward(scores)
        return (scores > 0).to(scores.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad_output: torch.Tensor) -> torch.Tensor:
        """Return the gradient through ``sigmoid'(score)``."""
        (scores,) = ctx.saved_tensors
        sigmoid = torch.sigmoid(scores)
        return grad_output * sigmoid * (1.0 - sigmoid)


def straight_through_mask(scores: torch.Tensor) -> torch.Tensor:
    """Return the binary time-step mask of ``scores`` with the straight-through gradient."""
    return StraightThroughMask.apply(scores)


@dataclass
class Trace:
    """What one forward pass did (:meth:`SpikingViT.trace`).

    Attributes
    ----------
    logits : torch.Tensor
        ``[B, K]``, what :meth:`SpikingViT.forward` returned.
    spikes : dict[str, torch.Tensor]
        Layer name (SPEC.md section 1 order) -> ``[B, T]`` spike counts of each image at
        each step, summed over tokens and channels.
    masks : torch.Tensor
        ``[2L + 2, T]`` the 0/1 time-step mask that was used (module order).
    kv_pairs : dict[str, torch.Tensor]
        Attention module name (``blocks.i.attn``) -> ``[B, T]`` the accumulates of its
        ``Kᵀ·V``: ``sum over tokens m and heads h of |K_mh| * |V_mh|`` (SPEC.md section 3).
    stem_ac_ops : torch.Tensor
        ``[B, T]`` the accumulates of the stem's convolutions on spikes (every stage but
        the first, and the RPE, at their active steps: input spikes x positions reached x out
        channels, SPEC.md section 5); zeros without a stem.
    """

    logits: torch.Tensor
    spikes: dict[str, torch.Tensor]
    masks: torch.Tensor
    kv_pairs: dict[str, torch.Tensor]
    stem_ac_ops: torch.Tensor


class LinearBN(nn.Module):
    """A bias-free linear layer then BatchNorm over its output features, on ``[..., N, F]``.

    All leading dimensions (time steps and images) form the batch of the BatchNorm, so its
    statistics pool every step, as the running statistics used at inference do.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # noqa: D102
        leading, (count, _) = tokens.shape[:-2], tokens.shape[-2:]
        flat = self.linear(tokens.reshape(-1, count, tokens.shape[-1]))
        return self.bn(flat.transpose(1, 2)).transpose(1, 2).reshape(*leading, count, -1)


def per_step(mask: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    """Return a ``[T]`` mask shaped ``[T, 1, 1, 1]`` to scale ``[T, B, N, F]`` tensors.

    ``ndim``: the rank of the tensors it scales (5 for the stem's ``[T, B, C, H, W]``).
    """
    return mask.reshape(-1, *([1] * (ndim - 1)))


class PatchEmbedding(nn.Module):
    """Conv p x p stride p (+ BN over channels) plus a position embedding.

    Its output is the current of the embedding LIF, the same at every step (direct
    encoding).

    Args:
        image_shape: ``(C, H, W)``.
        patch: patch size ``p`` (divides H and W).
        dim: token width ``D``.
    """

    def __init__(self, image_shape: tuple[int, int, int], patch: int, dim: int) -> None:
        super().__init__()
        channels, height, width = image_shape
        tokens = (height // patch) * (width // patch)
        self.conv = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch, bias=True)
        self.bn = nn.BatchNorm1d(dim)
        self.pos = nn.Parameter(torch.zeros(tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the embedding current ``[B, N, D]`` of images in 0..1."""
        features = self.conv(images).flatten(2)  # [B, D, N], tokens in row-major patch order
        return self.bn(features).transpose(1, 2) + self.pos


class ConvStage(nn.Module):
    """One stem module: conv k x k (no bias) -> BN -> [max-pool] -> LIF -> [max-pool].

    Its input is ``[T, B, C, H, W]`` spikes, or (``direct``, stage 0) the image
    ``[B, C, H, W]``, whose current is computed once and is the same at every step. Its
    output is the spikes it emits, ``m_t * s_t'`` (pooled when the pool is after the LIF):
    a stage is a module of its own, so its mask applies where the spikes leave it.

    Args:
        stage: the stage's shapes (:func:`~stepvit.model.export.stem.stem_stages`).
        pool: ``{kernel, stride, padding}`` of the max-pool.
        direct: the input is the image (stage 0, direct encoding).
        leak_shift, reset: the LIF layer's.
    """

    def __init__(self, stage: StemStage, pool: dict[str, int], *, direct: bool,
                 leak_shift: int, reset: str) -> None:
        super().__init__()
        self.place = stage.pool
        self.direct = direct
        self.pool_geometry = dict(pool)
        self.conv = nn.Conv2d(stage.in_shape[0], stage.conv_shape[0], stage.kernel,
                              stride=stage.stride, padding=stage.padding, bias=False)
        self.bn = nn.BatchNorm2d(stage.conv_shape[0])
        self.neuron = LIFNeuron(leak_shift=leak_shift, reset=reset)
        self.register_buffer("reach", torch.from_numpy(stage.reach()).float(), persistent=False)

    def accumulates(self, inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return ``[B, T]``: input spikes ``[T, B, C, H, W]`` x positions reached x out channels.

        What the accelerator's event-driven convolution does: every input spike adds its
        ``Cout`` weights to each output position its window reaches (SPEC.md section 5).
        At a step where the stage's mask ``[T]`` is 0 the stage is skipped: no work.
        """
        reached = (inputs * self.reach).sum(dim=(-3, -2, -1)) * per_step(masks, 2)
        return (reached * self.conv.out_channels).T

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        """Return the max-pool of ``[..., C, H, W]`` (on spikes: an OR over the window)."""
        leading = maps.shape[:-3]
        pooled = F.max_pool2d(maps.reshape(-1, *maps.shape[-3:]), self.pool_geometry["kernel"],
                              self.pool_geometry["stride"], self.pool_geometry["padding"])
        return pooled.reshape(*leading, *pooled.shape[-3:])

    def current(self, inputs: torch.Tensor) -> torch.Tensor:
        """Return ``BN(conv(inputs))`` of ``[..., C, H, W]``, pooled if before the LIF."""
        leading = inputs.shape[:-3]
        out = self.bn(self.conv(inputs.reshape(-1, *inputs.shape[-3:])))
        out = out.reshape(*leading, *out.shape[-3:])
        return self.pool(out) if self.place == "before" else out

    def forward(self, inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return the emitted spikes ``[T, B, C', H', W']``; ``masks`` is the stage's ``[T]``."""
        current = self.current(inputs)
        if self.direct:
            current = current.expand(masks.shape[0], *current.shape)
        spikes = self.neuron(current, masks) * per_step(masks, 5)
        return self.pool(spikes) if self.place == "after" else spikes


class SpikingStem(nn.Module):
    """Spikformer's spiking patch splitting: conv stages, then the RPE, as tokens.

    The tokens are the last stage's spikes plus (with the RPE) the RPE's spikes, so a
    token value is 0, 1 or 2; positions in row-major order (SPEC.md section 5).

    Args:
        image_shape: ``(C, H, W)``.
        stem: the ``model.stem`` config (:func:`~stepvit.model.export.stem.complete_stem`).
        leak_shift, reset: the LIF layers'.
    """

    def __init__(self, image_shape: tuple[int, int, int], stem: dict, *, leak_shift: int,
                 reset: str) -> None:
        super().__init__()
        self.config = complete_stem(stem)
        shapes = stem_stages(image_shape, self.config)
        neuron = {"leak_shift": leak_shift, "reset": reset}
        count = len(self.config["stages"])
        self.stages = nn.ModuleList(
            ConvStage(stage, self.config["pool"], direct=index == 0, **neuron)
            for index, stage in enumerate(shapes[:count]))
        self.rpe = (ConvStage(shapes[-1], self.config["pool"], direct=False, **neuron)
                    if self.config["rpe"] else None)
        self.names = [stage.name for stage in shapes]
        self.tokens = shapes[-1].out_shape[1] * shapes[-1].out_shape[2]

    def modules_in_order(self) -> list[ConvStage]:
        """Return the stem's modules (stages, then the RPE) in mask-row order."""
        return [*self.stages, *([self.rpe] if self.rpe is not None else [])]

    def spiking_stages(self) -> list[ConvStage]:
        """Return the modules whose convolution takes spikes (all but the first stage)."""
        return self.modules_in_order()[1:]

    def neurons(self) -> list[LIFNeuron]:
        """Return the stem's LIF layers in module order."""
        return [module.neuron for module in self.modules_in_order()]

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return the token stream ``[T, B, N, D]`` of images in 0..1; ``masks`` ``[S, T]``."""
        x = images
        for index, stage in enumerate(self.stages):
            x = stage(x, masks[index])
        if self.rpe is not None:
            x = x + self.rpe(x, masks[len(self.stages)])
        return x.flatten(-2).transpose(-2, -1)


class SpikingAttention(nn.Module):
    """Spiking self-attention (no softmax): LIF -> Q, K, V -> (Q Kᵀ) V · 2^-shift -> LIF -> proj.

    Its LIF layers are ``neurons[name]`` for ``name`` in ``in, q, k, v, attn``. Inside the
    module they pass on the spikes they would fire (``s_t'``), so at a masked step the branch
    is what the step would add; the caller masks the branch.
    """

    def __init__(self, dim: int, heads: int, *, attn_shift: int, leak_shift: int,
                 reset: str) -> None:
        super().__init__()
        self.heads = heads
        self.attn_shift = attn_shift
        self.q = LinearBN(dim, dim)
        self.k = LinearBN(dim, dim)
        self.v = LinearBN(dim, dim)
        self.proj = LinearBN(dim, dim)
        self.neurons = nn.ModuleDict({
            name: LIFNeuron(leak_shift=leak_shift, reset=reset) for name in ATTENTION_LAYERS
        })

    def split_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return ``[..., N, D]`` tokens as ``[..., heads, N, D / heads]``."""
        *leading, count, dim = tokens.shape
        return tokens.reshape(*leading, count, self.heads, dim // self.heads).transpose(-3, -2)

    def forward(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return the branch ``BN(Linear_proj(a))`` of the stream ``x`` ``[T, B, N, D]``.

        ``masks`` ``[T]`` is the module's time-step mask: its LIFs are frozen where it is 0.
        The branch is not masked yet (SPEC.md section 2, module ``blocks.i.attn``).
        """
        s = self.neurons["in"](x, masks)
        q, k, v = (self.split_heads(self.neurons[name](getattr(self, name)(s), masks))
                   for name in ("q", "k", "v"))
        y = (q @ k.transpose(-2, -1)) @ v * 2.0 ** -self.attn_shift
        a = self.neurons["attn"](y.transpose(-3, -2).flatten(-2), masks)
        return self.proj(a)

    def kv_accumulates(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Return ``[B, T]``: ``sum over m, h of |K_mh| * |V_mh|`` of spikes ``[T, B, N, D]``.

        The accumulates of ``Kᵀ·V`` (SPEC.md section 3, "Work counted").
        """
        key_counts, value_counts = (self.split_heads(spikes).sum(dim=-1) for spikes in (k, v))
        return (key_counts * value_counts).sum(dim=(2, 3)).T


class SpikingMLP(nn.Module):
    """LIF -> fc1 (+BN) -> LIF -> fc2 (+BN); its LIF layers are ``neurons["in"]``, ``["fc1"]``."""

    def __init__(self, dim: int, mlp_dim: int, *, leak_shift: int, reset: str) -> None:
        super().__init__()
        self.fc1 = LinearBN(dim, mlp_dim)
        self.fc2 = LinearBN(mlp_dim, dim)
        self.neurons = nn.ModuleDict({
            name: LIFNeuron(leak_shift=leak_shift, reset=reset) for name in MLP_LAYERS
        })

    def forward(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return the branch ``BN(fc2(h))`` of ``x`` (as :meth:`SpikingAttention.forward`)."""
        s = self.neurons["in"](x, masks)
        h = self.neurons["fc1"](self.fc1(s), masks)
        return self.fc2(h)


class SpikingBlock(nn.Module):
    """One transformer block: attention module then MLP module, each a masked residual."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, *, attn_shift: int,
                 leak_shift: int, reset: str) -> None:
        super().__init__()
        self.attn = SpikingAttention(dim, heads, attn_shift=attn_shift,
                                     leak_shift=leak_shift, reset=reset)
        self.mlp = SpikingMLP(dim, mlp_dim, leak_shift=leak_shift, reset=reset)

    def forward(self, x: torch.Tensor, attn_masks: torch.Tensor,
                mlp_masks: torch.Tensor) -> torch.Tensor:
        """Return the stream ``[T, B, N, D]`` after the block; each mask is ``[T]``."""
        # branch before mask: autograd then sums the mask's gradients in the order it always has
        x = x + self.attn(x, attn_masks) * per_step(attn_masks)
        x = x + self.mlp(x, mlp_masks) * per_step(mlp_masks)
        return x


class ClassifierHead(nn.Module):
    """LIF on the stream, spike counts over tokens and steps, linear classifier."""

    def __init__(self, dim: int, num_classes: int, *, leak_shift: int, reset: str) -> None:
        super().__init__()
        self.neuron = LIFNeuron(leak_shift=leak_shift, reset=reset)
        self.linear = nn.Linear(dim, num_classes, bias=True)

    def forward(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return the logits ``[B, K]`` of the stream ``x`` ``[T, B, N, D]``, mask ``[T]``."""
        steps, _, tokens, _ = x.shape
        s = self.neuron(x, masks) * per_step(masks)
        counts = s.sum(dim=(0, 2))
        return self.linear(counts / (tokens * steps))


class SpikeMonitor:
    """Records the spikes ``m_t * s_t'`` each LIF layer emits while the monitor is entered.

    Forward hooks on the layers, as SpikingJelly's ``OutputMonitor``: the network's
    ``forward`` runs unchanged. A layer's hook sees its inputs (currents, the module's mask)
    and its would-be spikes.

    Args:
        layers: LIF layer name -> layer.
        keep: names of the layers whose spike maps ``[T, B, N, F]`` are kept in :attr:`maps`
            (every layer's counts are kept in :attr:`counts`).
    """

    def __init__(self, layers: dict[str, LIFNeuron], keep: set[str]) -> None:
        self.layers = layers
        self.keep = keep
        #: Layer name -> ``[B, T]`` spikes of each image at each step.
        self.counts: dict[str, torch.Tensor] = {}
        #: Layer name (those in ``keep``) -> the emitted spikes ``[T, B, N, F]``.
        self.maps: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> SpikeMonitor:
        self._handles = [layer.register_forward_hook(partial(self.record, name))
                         for name, layer in self.layers.items()]
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def record(self, name: str, _layer: LIFNeuron, inputs: tuple[torch.Tensor, torch.Tensor],
               would_be: torch.Tensor) -> None:
        """Record the spikes layer ``name`` emitted (its hook)."""
        _, masks = inputs
        emitted = (per_step(masks, would_be.dim()) * would_be).detach()
        self.counts[name] = emitted.flatten(2).sum(dim=2).T
        if name in self.keep:
            self.maps[name] = emitted


class SpikingViT(nn.Module):
    """Spikformer-style spiking ViT with a trainable time-step mask per module.

    Args:
        image_shape: ``(C, H, W)`` of the input images.
        patch: patch size ``p``; divides H and W.
        dim: token width ``D``.
        heads: attention heads; divides ``dim``.
        depth: number of blocks ``L``.
        mlp_dim: MLP hidden width ``M``.
        num_classes: classes ``K``.
        t_max: time steps ``T``.
        leak_shift: LIF leak ``v * (1 - 2^-leak_shift)``.
        reset: ``"hard"`` or ``"soft"``.
        attn_shift: attention output scale ``2^-attn_shift``.
        score_init: initial value of every time-step score (> 0: all steps start active).
        stem: the convolutional stem (``model.stem`` of a config, SPEC.md section 5) in place
            of the linear patch embedding (then ``patch`` is not used); None: no stem.
    """

    def __init__(self, image_shape: tuple[int, int, int], patch: int, dim: int, heads: int,
                 depth: int, mlp_dim: int, num_classes: int, t_max: int, leak_shift: int = 1,
                 reset: str = "hard", attn_shift: int = 3, score_init: float = 1.0,
                 stem: dict | None = None) -> None:
        super().__init__()
        channels, height, width = image_shape
        if stem is None and (patch < 1 or height % patch or width % patch):
            raise ValueError(f"patch {patch} must divide the image size {height}x{width}")
        if heads < 1 or dim % heads:
            raise ValueError(f"heads {heads} must divide dim {dim}")
        if t_max < 1:
            raise ValueError(f"t_max must be >= 1, got {t_max}")
        self.image_shape = (channels, height, width)
        self.depth = depth
        self.t_max = t_max
        neuron = {"leak_shift": leak_shift, "reset": reset}
        #: The architecture's stem (complete), or None: the linear patch embedding.
        self.stem_config = complete_stem(stem) if stem else None
        if self.stem_config is not None:
            last = self.stem_config["stages"][-1]["channels"]
            if last != dim:
                raise ValueError(f"the stem's last stage has {last} channels, the width is {dim}")
            self.stem = SpikingStem(self.image_shape, self.stem_config, **neuron)
            self.tokens = self.stem.tokens
        else:
            self.tokens = (height // patch) * (width // patch)
            self.embed = PatchEmbedding(self.image_shape, patch, dim)
            self.embed_neuron = LIFNeuron(**neuron)
        self.blocks = nn.ModuleList(
            SpikingBlock(dim, heads, mlp_dim, attn_shift=attn_shift, **neuron)
            for _ in range(depth)
        )
        self.head = ClassifierHead(dim, num_classes, **neuron)
        #: Mask rows before the first block's: the stem's modules, or ``embed``.
        self.stem_modules = len(self.module_names()) - 2 * depth - 1
        self.timestep_scores = nn.Parameter(
            torch.full((self.stem_modules + 2 * depth + 1, t_max), float(score_init)))

    def module_names(self) -> list[str]:
        """Return the module names in mask-row order (SPEC.md section 1)."""
        return module_names_for(self.depth, self.stem_config)

    def layer_names(self) -> list[str]:
        """Return the LIF layer names in SPEC.md section 1 order (the trace's keys)."""
        return layer_names_for(self.depth, self.stem_config)

    def lif_layers(self) -> dict[str, LIFNeuron]:
        """Return the LIF layers under their SPEC.md section 1 names, in that order."""
        layers = self.stem.neurons() if self.stem_config else [self.embed_neuron]
        for block in self.blocks:
            layers += [*block.attn.neurons.values(), *block.mlp.neurons.values()]
        return dict(zip(self.layer_names(), [*layers, self.head.neuron], strict=True))

    def nested(self, mask: torch.Tensor) -> torch.Tensor:
        """Return a learned mask with the stem's rows nested.

        A stem module runs a step only if the module before it runs it too, and every block
        module and the head only where the stem hands on tokens (its last module runs).

        The stem is a chain within a step (stage ``i`` takes stage ``i - 1``'s spikes of the
        same step, with no residual around it), so a stage step whose input stage is masked
        would only integrate its bias; and the residual stream is rebuilt at every step
        from the tokens, so a block at a step without them sees an empty stream. The
        learned mask never asks for either. Nesting is what the scores are read as; a mask
        given to :meth:`forward` runs as it is.
        """
        if self.stem_config is None:
            return mask
        rows = [mask[0]]
        for row in range(1, self.stem_modules):
            rows.append(rows[-1] * mask[row])
        return torch.cat([torch.stack(rows), mask[self.stem_modules:] * rows[-1]])

    def timestep_mask(self) -> torch.Tensor:
        """Return the trained 0/1 mask ``[S + 2L + 1, T]`` (int64, no gradient)."""
        return self.nested((self.timestep_scores.detach() > 0).to(torch.int64))

    def penalty(self) -> torch.Tensor:
        """Return the expected active steps: mean over modules of ``sum_t sigmoid(score_t)``."""
        return torch.sigmoid(self.timestep_scores).sum(dim=1).mean()

    def step_masks(self, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Return the ``[2L + 2, T]`` mask a pass runs with, in the scores' dtype.

        ``masks`` if given (checked; no gradient reaches the scores then), else the trained
        mask with its straight-through gradient.
        """
        if masks is None:
            return self.nested(straight_through_mask(self.timestep_scores))
        expected = tuple(self.timestep_scores.shape)
        if tuple(masks.shape) != expected:
            raise ValueError(f"masks must have shape {expected}, got {tuple(masks.shape)}")
        return masks.to(self.timestep_scores.dtype)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Return the logits ``[B, K]`` of images (SPEC.md section 2).

        Layer by layer over all steps: each layer depends only on earlier layers' spikes of
        the same and earlier steps, so this is the step-by-step network of SPEC.md section 2.

        Parameters
        ----------
        images : torch.Tensor
            ``[B, C, H, W]`` uint8 or float, pixels 0..255.
        masks : torch.Tensor, optional
            ``[2L + 2, T]`` 0/1 mask to use instead of the trained one (for instance a
            budget-capped mask); no gradient reaches the scores then.
        """
        m = self.step_masks(masks)
        pixels = images.to(self.timestep_scores.dtype) / 255.0
        if self.stem_config is not None:
            x = self.stem(pixels, m[:self.stem_modules])
        else:
            current = self.embed(pixels)
            x = self.embed_neuron(current.expand(self.t_max, *current.shape), m[0])
            x = x * per_step(m[0])
        first = self.stem_modules
        for index, block in enumerate(self.blocks):
            x = block(x, m[first + 2 * index], m[first + 1 + 2 * index])
        return self.head(x, m[-1])

    def trace(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> Trace:
        """Run :meth:`forward` and return what it did: logits, spike counts and Kᵀ·V work.

        Parameters are those of :meth:`forward`.
        """
        attention = [f"blocks.{index}.attn" for index in range(self.depth)]
        keep = {f"{module}.{name}" for module in attention for name in ("k", "v")}
        stem_work = torch.zeros(images.shape[0], self.t_max)
        handles = []
        if self.stem_config is not None:
            def count(stage: ConvStage, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
                nonlocal stem_work
                stem_work = stem_work + stage.accumulates(*(x.detach() for x in inputs)).cpu()
            handles = [stage.register_forward_hook(count) for stage in self.stem.spiking_stages()]
        try:
            with SpikeMonitor(self.lif_layers(), keep) as monitor:
                logits = self(images, masks)
        finally:
            for handle in handles:
                handle.remove()
        return Trace(
            logits=logits,
            spikes={name: monitor.counts[name] for name in self.layer_names()},
            masks=self.step_masks(masks).detach().to(torch.int64),
            kv_pairs={module: block.attn.kv_accumulates(monitor.maps[f"{module}.k"],
                                                        monitor.maps[f"{module}.v"])
                      for module, block in zip(attention, self.blocks)},
            stem_ac_ops=stem_work,
        )


__all__ = ["SpikingViT", "Trace", "straight_through_mask"]
