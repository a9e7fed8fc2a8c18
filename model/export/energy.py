"""The energy estimate SNN papers quote, in one place for the model, the golden model and the bench.

``E = 4.6 pJ · MACs + 0.9 pJ · ACs`` (45 nm, Horowitz, ISSCC 2014): an estimate, to be
quoted beside the operation counts it comes from. Numpy-free, so a board can use it.
"""

from __future__ import annotations

from typing import Any

#: Energy per operation, 45 nm (Horowitz, ISSCC 2014), in picojoules.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9


def energy_estimate_uj(mac_ops: Any, ac_ops: Any) -> Any:
    """Return ``E = 4.6 pJ * MACs + 0.9 pJ * ACs`` in microjoules (an estimate).

    Works on numbers, numpy arrays and torch tensors alike.
    """
    return (E_MAC_PJ * mac_ops + E_AC_PJ * ac_ops) * 1e-6
