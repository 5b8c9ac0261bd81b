"""BraTS data on disk: case discovery in every release layout, NIfTI I/O, phantoms.

Source: DESIGN.md section 1.
"""

from brats_mtl.data.discovery import (
    LAYOUTS,
    CaseFiles,
    LabelFile,
    discover_cases,
    discover_label_maps,
)
from brats_mtl.data.io import (
    Case,
    CaseDataError,
    load_case,
    load_label_map,
    load_raw_label_map,
    save_nifti,
    write_segmentation,
)
from brats_mtl.data.phantom import make_phantom, write_phantom_case, write_phantom_cohort

__all__ = [
    "LAYOUTS",
    "Case",
    "CaseDataError",
    "CaseFiles",
    "LabelFile",
    "discover_cases",
    "discover_label_maps",
    "load_case",
    "load_label_map",
    "load_raw_label_map",
    "make_phantom",
    "save_nifti",
    "write_phantom_case",
    "write_phantom_cohort",
    "write_segmentation",
]
