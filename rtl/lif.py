"""The integer LIF update of ``lanes`` neurons at once (SPEC.md section 3), combinational.

``H = V - (V >> k) + I``; ``S = H >= θ``; then the reset: hard (``V = 0`` where ``S``) or
soft (``V = H - θ`` where ``S``). The golden model writes the same rule once in
:func:`stepvit.model.golden.lif_step`; the tests pin the two together.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stepvit.model.export import RESET_RULES


class LIFLanes(wiring.Component):
    """``lanes`` integer LIF neurons updated in one combinational step.

    Parameters
    ----------
    lanes : int
        Neurons updated together.
    membrane_bits : int
        Signed width of a membrane (``V`` and ``H``) and of a threshold.
    current_bits : int
        Signed width of the input current ``I``.
    leak_shift : int
        ``k``: the leak is ``V >> k`` (an arithmetic shift, so floor).
    reset : str
        ``"hard"`` or ``"soft"``.

    Members
    -------
    membrane : In(ArrayLayout(signed(membrane_bits), lanes))
        ``V`` before the step.
    current : In(ArrayLayout(signed(current_bits), lanes))
        ``I`` of the step.
    threshold : In(ArrayLayout(signed(membrane_bits), lanes))
        ``θ`` per neuron (at least 1).
    next_membrane : Out(ArrayLayout(signed(membrane_bits), lanes))
        ``V`` after the step and the reset.
    spikes : Out(lanes)
        ``S``, bit ``l`` for lane ``l``.
    """

    def __init__(
        self, *, lanes: int, membrane_bits: int, current_bits: int, leak_shift: int,
        reset: str
    ) -> None:
        for name, value in (("lanes", lanes), ("membrane_bits", membrane_bits),
                            ("current_bits", current_bits)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(leak_shift, int) or leak_shift < 0:
            raise ValueError(f"leak_shift must be a non-negative integer, not {leak_shift!r}")
        if reset not in RESET_RULES:
            raise ValueError(f"reset must be one of {', '.join(RESET_RULES)}, not {reset!r}")
        self._lanes = lanes
        self._membrane_bits = membrane_bits
        self._leak_shift = leak_shift
        self._reset = reset
        super().__init__({
            "membrane": In(data.ArrayLayout(signed(membrane_bits), lanes)),
            "current": In(data.ArrayLayout(signed(current_bits), lanes)),
            "threshold": In(data.ArrayLayout(signed(membrane_bits), lanes)),
            "next_membrane": Out(data.ArrayLayout(signed(membrane_bits), lanes)),
            "spikes": Out(lanes),
        })

    def elaborate(self, platform: object) -> Module:
        """Build one charge-fire-reset circuit per lane."""
        m = Module()
        for lane in range(self._lanes):
            membrane = self.membrane[lane]
            # The export proves |H| fits membrane_bits; the wider sum keeps the compare exact.
            charged = membrane - (membrane >> self._leak_shift) + self.current[lane]
            fired = charged >= self.threshold[lane]
            if self._reset == "hard":
                after_fire = 0
            else:
                after_fire = charged - self.threshold[lane]
            m.d.comb += [
                self.spikes[lane].eq(fired),
                self.next_membrane[lane].eq(Mux(fired, after_fire, charged)),
            ]
        return m
