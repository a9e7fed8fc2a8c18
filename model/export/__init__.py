"""The contract between training and hardware: the export directory, torch-free.

Everything here needs numpy and pyyaml alone, so the model, the generator, the simulation
and a board's Python all read and check exports through the same code:

- :mod:`~stepvit.model.export.reader`: the manifest and arrays, validated
  (:func:`load_export`, :class:`Export`, the worst-case bounds behind the bit widths);
- :mod:`~stepvit.model.export.writer`: the one writer (:func:`write_export`);
- :mod:`~stepvit.model.export.vectors`: ``golden_vectors.npz``, its writer and its one reader;
- :mod:`~stepvit.model.export.budgets`: the ``--budget`` grammar and the mask a budget leaves;
- :mod:`~stepvit.model.export.energy`: the energy estimate;
- :mod:`~stepvit.model.export.errors`: :class:`StepvitError`, the one error type.

The contract's text is ``SPEC.md`` beside this file.
"""

from stepvit.model.export.budgets import (
    BUDGET_GRAMMAR,
    budget_mask_of,
    check_budget,
    parse_budgets,
)
from stepvit.model.export.energy import energy_estimate_uj
from stepvit.model.export.errors import DeviceTimeout, ExportError, StepvitError
from stepvit.model.export.reader import (
    MANIFEST_FILE,
    MAX_HARDWARE_BITS,
    RESET_RULES,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    Export,
    array_shapes,
    bounds_by_source,
    check_arrays,
    check_manifest,
    config_hash_of,
    design_widths,
    layer_names_for,
    load_export,
    module_names_for,
    shape_hash_of,
    signed_bits,
    threshold_widths,
    widths_fit,
    worst_case_bounds,
)

__all__ = [
    "BUDGET_GRAMMAR", "MANIFEST_FILE", "MAX_HARDWARE_BITS", "RESET_RULES", "SCHEMA_VERSION",
    "WEIGHTS_FILE", "DeviceTimeout", "Export", "ExportError", "StepvitError", "array_shapes",
    "bounds_by_source", "budget_mask_of", "check_arrays", "check_budget", "check_manifest",
    "config_hash_of", "design_widths", "energy_estimate_uj", "layer_names_for", "load_export",
    "module_names_for", "parse_budgets", "shape_hash_of", "signed_bits", "threshold_widths",
    "widths_fit", "worst_case_bounds",
]
