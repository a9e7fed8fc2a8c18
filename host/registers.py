"""The accelerator's AXI4-Lite register map: one table for the generator and the host.

Offsets are byte addresses on the ``s_axil`` port (32-bit registers). The generator in
``rtl/`` builds its register file from :data:`REGISTERS`; the host driver and the
simulation read and write registers by name through :func:`offset`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Value of the ``ID`` register: ASCII ``SVIT``.
ACCEL_ID = 0x53564954


@dataclass(frozen=True)
class Register:
    """One 32-bit register.

    Attributes
    ----------
    name : str
        Name used by the host and the generator.
    offset : int
        Byte offset on the AXI4-Lite port.
    access : str
        ``"r"`` (read only) or ``"rw"``.
    doc : str
        What the register holds.
    """

    name: str
    offset: int
    access: str
    doc: str


#: Bits of the ``STATUS`` register.
STATUS_BUSY = 1 << 0
STATUS_FRAME_ERROR = 1 << 1

#: Bits of the ``CONTROL`` register.
CONTROL_CLEAR_ERROR = 1 << 0

REGISTERS: tuple[Register, ...] = (
    Register("ID", 0x00, "r", "ACCEL_ID, 'SVIT'"),
    Register("CONFIG_HASH", 0x04, "r", "the export's config_hash (32 bits)"),
    Register("STATUS", 0x08, "r", "STATUS_BUSY | STATUS_FRAME_ERROR"),
    Register("CONTROL", 0x0C, "rw", "write CONTROL_CLEAR_ERROR to clear frame_error"),
    Register("CYCLES", 0x10, "r", "cycle count of the last image"),
    Register("IMAGES", 0x14, "r", "images processed since reset"),
    Register("T_MAX", 0x18, "r", "time steps of the design"),
    Register("NUM_MODULES", 0x1C, "r", "number of mask registers (2L + 2)"),
    Register("LANES", 0x20, "r", "parallel accumulator lanes"),
)

#: Mask register of module ``i`` (SPEC.md module order) is at ``MASK_BASE + 4 * i``:
#: bit ``t`` enables time step ``t``. Reset value: the trained mask.
MASK_BASE = 0x40


def offset(name: str) -> int:
    """Return the byte offset of the register called ``name``.

    Parameters
    ----------
    name : str
        A register name from :data:`REGISTERS`, or ``MASK<i>`` for module ``i``'s mask.

    Raises
    ------
    KeyError
        If no register has that name.
    """
    if name.startswith("MASK") and name[4:].isdigit():
        return MASK_BASE + 4 * int(name[4:])
    for register in REGISTERS:
        if register.name == name:
            return register.offset
    raise KeyError(f"no accelerator register named {name!r}")
