"""Leaky integrate-and-fire neurons: a layer runs all time steps, one step at a time.

A neuron step is charge -> fire -> reset (SPEC.md section 2):

    h_t = v_{t-1} * (1 - 2^-k) + I_t
    s_t = H(h_t - threshold)
    v_t = h_t * (1 - s_t)            (hard reset)   or   h_t - s_t * threshold   (soft)

and a frozen step (the module's time-step mask is 0) keeps the membrane and emits nothing:
``v_t = m * v_t' + (1 - m) * v_{t-1}``, ``s_t = m * s_t'`` (the network applies ``m`` to
the spikes where they leave a module). The integer golden model uses the
same order and the same reset rule; :func:`reset_membrane` is the one place that rule lives
on the float side.
"""

from __future__ import annotations

import torch
from torch import nn

from stepvit.model.export import RESET_RULES

#: Steepness of the sigmoid surrogate gradient.
SURROGATE_ALPHA = 4.0


class SigmoidSurrogateSpike(torch.autograd.Function):
    """Heaviside step forward, derivative of ``sigmoid(alpha * x)`` backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor,
                alpha: float) -> torch.Tensor:
        """Return ``x >= 0`` as 0/1 in ``x``'s dtype."""
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Return the gradient through ``alpha * sigmoid'(alpha x)``."""
        (x,) = ctx.saved_tensors
        sigmoid = torch.sigmoid(ctx.alpha * x)
        return grad_output * ctx.alpha * sigmoid * (1.0 - sigmoid), None


def sigmoid_surrogate_spike(x: torch.Tensor, alpha: float = SURROGATE_ALPHA) -> torch.Tensor:
    """Return ``x >= 0`` as 0/1 floats, with the sigmoid surrogate gradient.

    Parameters
    ----------
    x : torch.Tensor
        Membrane minus threshold.
    alpha : float
        Steepness: the backward pass is ``alpha * sigmoid(alpha x) * (1 - sigmoid(alpha x))``.
    """
    return SigmoidSurrogateSpike.apply(x, alpha)


def reset_membrane(charged: torch.Tensor, spikes: torch.Tensor, threshold: float,
                   rule: str) -> torch.Tensor:
    """Return the membrane after the reset: the one reset rule on the model's side.

    The float model, the quantization-aware emulation and the integer golden model all
    call it (``spikes`` 0/1, float or int64; integer inputs give an integer membrane);
    ``rtl/lif.py`` is its hardware twin, held to it by the bit-exact tests.

    Parameters
    ----------
    charged : torch.Tensor
        Membrane after charging, ``h_t``.
    spikes : torch.Tensor
        Spikes fired at this step, 0/1.
    threshold : float
        Firing threshold (what a soft reset subtracts).
    rule : str
        ``"hard"``: back to zero where a spike fired; ``"soft"``: subtract the threshold.
    """
    if rule == "hard":
        return charged * (1 - spikes)
    if rule == "soft":
        return charged - spikes * threshold
    raise ValueError(f"reset rule must be one of {RESET_RULES}, got {rule!r}")


class LIFNeuron(nn.Module):
    """A layer of LIF neurons: multi-step, ``[T, B, ...]`` currents in, ``[T, B, ...]`` spikes out.

    The layer holds no state between calls: :meth:`forward` starts every image from a zero
    membrane and carries it through the ``T`` steps of :meth:`step`, which takes the
    membrane in and gives it back.

    Args:
        leak_shift: ``k`` in the leak ``v * (1 - 2^-k)`` (an arithmetic shift in hardware).
        reset: ``"hard"`` or ``"soft"`` (see :func:`reset_membrane`).
        threshold: firing threshold.
    """

    def __init__(self, *, leak_shift: int = 1, reset: str = "hard",
                 threshold: float = 1.0) -> None:
        super().__init__()
        if not isinstance(leak_shift, int) or leak_shift < 1:
            raise ValueError(f"leak_shift must be an integer >= 1, got {leak_shift!r}")
        if reset not in RESET_RULES:
            raise ValueError(f"reset must be one of {RESET_RULES}, got {reset!r}")
        self.leak_shift = leak_shift
        self.reset_rule = reset
        self.threshold = threshold
        #: False in the non-spiking twin: :meth:`forward` is a ReLU of the current, no state.
        self.spiking = True

    def extra_repr(self) -> str:  # noqa: D102
        return (f"leak_shift={self.leak_shift}, reset={self.reset_rule!r}, "
                f"threshold={self.threshold}")

    def charge(self, membrane: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Return ``h_t = v_{t-1} (1 - 2^-k) + I_t``."""
        return membrane * (1.0 - 2.0 ** -self.leak_shift) + current

    def fire(self, charged: torch.Tensor) -> torch.Tensor:
        """Return the spikes ``H(h_t - threshold)`` (sigmoid surrogate backward)."""
        return sigmoid_surrogate_spike(charged - self.threshold)

    def reset(self, charged: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        """Return ``v_t`` after the reset rule."""
        return reset_membrane(charged, spikes, self.threshold, self.reset_rule)

    def step(self, current: torch.Tensor, membrane: torch.Tensor | None,
             active: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one time step.

        Parameters
        ----------
        current : torch.Tensor
            Input current ``I_t``, any shape ``[B, ...]``.
        membrane : torch.Tensor or None
            Membrane ``v_{t-1}`` of the same shape; None for the first step (zeros).
        active : torch.Tensor or float
            The module's time-step mask ``m_t`` (0 or 1, may carry a straight-through
            gradient). At 0 the neuron is frozen: membrane kept, no spike.

        Returns
        -------
        spikes : torch.Tensor
            The spikes ``s_t'`` the neuron fires if active. The caller masks them,
            ``s_t = m_t * s_t'``, where they leave the module: inside a module the layers
            see what they would see if active, so that at a masked step the score's
            straight-through gradient measures what the step would contribute.
        membrane : torch.Tensor
            ``v_t = m_t * v_t' + (1 - m_t) * v_{t-1}``.
        """
        if membrane is None:
            membrane = torch.zeros_like(current)
        charged = self.charge(membrane, current)
        spikes = self.fire(charged)
        updated = self.reset(charged, spikes)
        return spikes, active * updated + (1.0 - active) * membrane

    def forward(self, currents: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Run ``T`` steps from a zero membrane; return the would-be spikes ``[T, B, ...]``.

        Parameters
        ----------
        currents : torch.Tensor
            ``[T, B, ...]`` the current of each step.
        masks : torch.Tensor
            ``[T]`` the module's time-step mask.
        """
        if not self.spiking:
            return torch.relu(currents)
        membrane = None
        spikes = []
        for t in range(currents.shape[0]):
            fired, membrane = self.step(currents[t], membrane, masks[t])
            spikes.append(fired)
        return torch.stack(spikes)
