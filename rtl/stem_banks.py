"""How a stem conv's output positions are interleaved over ``m x m`` memory banks.

An input spike at ``(y, x)`` reaches the conv outputs whose window holds it: along one axis
the rows ``oy`` with ``oy·s - p <= y <= oy·s - p + k - 1``, a run of at most ``ceil(k / s)``
consecutive rows. Output row ``oy`` lives in bank row ``oy mod m`` (and column ``ox`` in bank
column ``ox mod m``): with ``m >= ceil(k / s)`` the reached rows of one spike all sit in
different bank rows, so one cycle reads, adds and writes every reached position, each in its
own bank, with no conflict. A max-pool window of ``pk <= m`` consecutive conv rows is
likewise spread over distinct banks, so one cycle reads a whole window too.

Which reached row a bank row holds (and with which kernel row) depends only on ``y``: these
are small constant tables built here at generation time, so the hardware never divides.
Numpy only; :mod:`stepvit.rtl.stem_conv` builds the circuit from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepvit.model.export.stem import conv_out


@dataclass(frozen=True)
class AxisTables:
    """One axis's lookup tables, ``[positions, m]`` int64 each.

    Attributes
    ----------
    valid : numpy.ndarray
        1 where bank row (or column) ``r`` holds a conv position for this input (or window).
    block : numpy.ndarray
        That conv position divided by ``m`` (its row of blocks inside the bank).
    tap : numpy.ndarray
        The kernel row (or column) that joins the input to it (0 for a pool window).
    """

    valid: np.ndarray
    block: np.ndarray
    tap: np.ndarray


def bank_modulus(kernel: int, stride: int, pool_kernel: int = 1) -> int:
    """Return ``m``, the bank rows (and columns): enough for a spike's reach and a pool window."""
    return max(-(-kernel // stride), pool_kernel)


def scatter_tables(in_size: int, kernel: int, stride: int, padding: int,
                   modulus: int) -> AxisTables:
    """Return the tables of the conv outputs each input position reaches, per bank row.

    Raises
    ------
    ValueError
        If two reached outputs of one input fall in the same bank row (``modulus`` too small).
    """
    out_size = conv_out(in_size, kernel, stride, padding)
    valid = np.zeros((in_size, modulus), dtype=np.int64)
    block = np.zeros_like(valid)
    tap = np.zeros_like(valid)
    for pos in range(in_size):
        for out in range(out_size):
            offset = pos - (out * stride - padding)
            if 0 <= offset < kernel:
                row = out % modulus
                if valid[pos, row]:
                    raise ValueError(f"bank modulus {modulus} is below the reach of a "
                                     f"{kernel}-wide stride-{stride} conv")
                valid[pos, row], block[pos, row], tap[pos, row] = 1, out // modulus, offset
    return AxisTables(valid, block, tap)


def window_tables(conv_size: int, pool_kernel: int, pool_stride: int, pool_padding: int,
                  modulus: int) -> AxisTables:
    """Return the tables of the conv positions inside each pool window, per bank row.

    The padding is never a candidate: a window row outside the map is not valid. A pool of
    kernel 1, stride 1, padding 0 reads each conv position alone (a stage without a pool
    before its LIF).

    Raises
    ------
    ValueError
        If a window is wider than the banks (``pool_kernel > modulus``).
    """
    if pool_kernel > modulus:
        raise ValueError(f"pool kernel {pool_kernel} is wider than the bank modulus {modulus}")
    pooled = conv_out(conv_size, pool_kernel, pool_stride, pool_padding)
    valid = np.zeros((pooled, modulus), dtype=np.int64)
    block = np.zeros_like(valid)
    for window in range(pooled):
        start = window * pool_stride - pool_padding
        for pos in range(max(start, 0), min(start + pool_kernel, conv_size)):
            valid[window, pos % modulus], block[window, pos % modulus] = 1, pos // modulus
    return AxisTables(valid, block, np.zeros_like(valid))


__all__ = ["AxisTables", "bank_modulus", "scatter_tables", "window_tables"]
