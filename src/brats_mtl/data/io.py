"""NIfTI reading and writing of BraTS cases (nibabel).

Arrays keep the voxel order nibabel loads them in: no reorientation, no transpose, no flip,
so a written segmentation lies on the input grid voxel for voxel (docs/design.md sections 1, 5).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from brats_mtl.atomic import atomic_output
from brats_mtl.conventions import (
    BRATS_2019,
    BRATS_2023,
    INTERNAL_LABELS,
    MODALITIES,
    LabelConvention,
    get_label_convention,
)
from brats_mtl.data.discovery import MSD_CHANNELS, CaseFiles
from brats_mtl.tasks import (
    LabelScheme,
    check_scheme_for_case,
    check_values,
    get_label_scheme,
    infer_label_scheme,
)

logger = logging.getLogger(__name__)

#: Relative and absolute tolerance when comparing the affines of a case's files.
AFFINE_TOLERANCE: float = 1e-4

# What a damaged file raises somewhere between nibabel, gzip and zlib.
_READ_ERRORS = (ImageFileError, EOFError, OSError, zlib.error, ValueError)


class CaseDataError(ValueError):
    """A case's files are unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True, eq=False)
class Case:
    """One loaded case.

    Attributes:
        files: where the case came from.
        image: float32, shape (4, X, Y, Z), channels ``t1, t1ce, t2, flair``, raw
            intensities in the voxel order nibabel loads (no reorientation).
        labels: uint8, shape (X, Y, Z), internal labels {0, 1, 2, 4}; ``None`` when the
            case is unlabeled or labels were not loaded.
        affine: float64, shape (4, 4), voxel -> world (mm) of the input images.
        header: NIfTI header of the ``t1`` file (the 4-D file for MSD), used to write
            results back on the same grid.
        spacing_mm: voxel size in mm along X, Y, Z (header zooms).
    """

    files: CaseFiles
    image: np.ndarray
    labels: np.ndarray | None
    affine: np.ndarray
    header: nib.Nifti1Header
    spacing_mm: tuple[float, float, float]

    @property
    def case_id(self) -> str:
        """The case ID, e.g. ``"BraTS2021_00000"``."""
        return self.files.case_id


def load_case(
    files: CaseFiles, *, load_labels: bool = True, scheme: LabelScheme | str | None = None
) -> Case:
    """Read the four modalities (and the segmentation) of one case.

    Args:
        files: a record from :func:`~brats_mtl.data.discover_cases`.
        load_labels: read the segmentation when the case has one.
        scheme: the label scheme of the segmentation (``brats_mtl.tasks``). None or a
            three-label scheme: the layout's convention, read into {0, 1, 2, 4}; a
            four-label scheme (``gli-post``, ``ped2024``): its file values, checked.

    Returns:
        The :class:`Case`; ``image`` float32 (4, X, Y, Z) in ``t1, t1ce, t2, flair``
        order (MSD channels FLAIR, T1w, T1gd, T2w are reordered), ``labels`` uint8
        (X, Y, Z) in the internal {0, 1, 2, 4} set (file values for a four-label scheme).

    Raises:
        FileNotFoundError: if a file is missing (names it).
        CaseDataError: (a ``ValueError``) if a file is unreadable or truncated; holds a
            4-D stack where one 3-D volume is expected; differs from the other
            modalities in shape or affine (the odd one out of the four is named, or all
            four when no three agree; affines on one line); holds NaN/inf voxels; holds
            label values outside the case's convention. The message names the file.

    Source: docs/design.md section 1 (layouts, channel order, label conventions).
    """
    if files.layout == "msd":
        image, affine, header = _load_msd_image(files.images["t1"])
    else:
        image, affine, header = _load_modalities(files.images)
    labels = None
    if load_labels and files.seg is not None:
        labels, seg_affine = _load_case_labels(files, scheme)
        if labels.shape != image.shape[1:]:
            raise CaseDataError(
                f"segmentation {files.seg} has shape {labels.shape} but the images of case "
                f"{files.case_id} have {image.shape[1:]}; the label map must lie on the "
                "image grid"
            )
        if not _same_affine(seg_affine, affine):
            # As nnU-Net: a label affine differing from the images' is reported, not fatal;
            # the label map is read on the image voxel grid.
            logger.warning(
                "segmentation %s: affine %s differs from the images' affine %s",
                files.seg,
                _one_line(seg_affine),
                _one_line(affine),
            )
    zooms = header.get_zooms()[:3]
    return Case(
        files=files,
        image=image,
        labels=labels,
        affine=affine,
        header=header,
        spacing_mm=(float(zooms[0]), float(zooms[1]), float(zooms[2])),
    )


def _load_case_labels(
    files: CaseFiles, scheme: LabelScheme | str | None
) -> tuple[np.ndarray, np.ndarray]:
    """The case's segmentation in internal labels and its affine (see :func:`load_case`)."""
    scheme = None if scheme is None else get_label_scheme(scheme)
    if scheme is None or scheme.convention is not None:
        labels, affine, _ = load_label_map(files.seg, files.label_convention)
        return labels, affine
    labels, affine, _ = load_raw_label_map(files.seg)
    check_scheme_for_case(scheme, files.case_id, files.seg)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()
    try:
        check_values(scheme, present, files.seg, "segmentation")
    except ValueError as exc:
        raise CaseDataError(str(exc)) from None
    return labels, affine


def case_label_scheme(files: CaseFiles, explicit: LabelScheme | str | None = None) -> LabelScheme:
    """The label scheme of a case's segmentation: ``explicit``, else inferred.

    Inferred by ``brats_mtl.tasks.infer_label_scheme`` from the layout, the case ID and,
    when those do not decide (2023+ IDs and layouts, plain names), the values in the file.
    An unlabeled case gets the scheme its layout and ID imply.

    Raises:
        CaseDataError: (a ``ValueError``) if the file cannot be read or its values name no
            scheme (names the case).
    """
    if explicit is not None:
        return get_label_scheme(explicit)
    present: list[int] = []
    decided = files.layout in ("msd", "brats2018", "brats2020", "brats2021")
    if files.seg is not None and not decided:
        labels, _, _ = load_raw_label_map(files.seg)
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()
    try:
        return infer_label_scheme(files.case_id, files.label_convention, present)
    except ValueError as exc:
        raise CaseDataError(f"{files.seg}: {exc}") from None


def load_label_map(
    path: str | Path, convention: LabelConvention | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read a segmentation (reference or prediction) into the internal label set.

    Args:
        path: a 3-D NIfTI label map (``.nii`` or ``.nii.gz``).
        convention: the file's label convention. ``None`` infers it from the values:
            a subset of {0, 1, 2, 4} is BraTS 2019, values containing 3 and no 4 are BraTS
            2023. MSD files cannot be told apart from BraTS 2023 (1 and 2 swapped): pass
            ``conventions.MSD`` for them.

    Returns:
        ``(labels, affine, spacing_mm)``: uint8 (X, Y, Z) internal labels {0, 1, 2, 4};
        float64 (4, 4) affine; voxel size in mm.

    Raises:
        FileNotFoundError: if the file does not exist.
        CaseDataError: (a ``ValueError``) if the file is unreadable, not 3-D, holds
            non-integer or non-finite values, or values outside the convention (or, when
            inferring, values fitting no convention). Names the file.

    Source: label conventions of BraTS 2017-2021, 2023 and MSD (docs/design.md section 1).
    """
    path = Path(path)
    img = _open(path)
    shape = _spatial_shape(img, path)
    raw = _read(img, path).reshape(shape)
    labels = _as_uint8_labels(raw, path)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()
    if convention is None:
        convention = _infer_convention(present, path)
    bad = [v for v in present if v not in convention.values]
    if bad:
        raise CaseDataError(
            f"label map {path} holds values {bad} outside the {convention.name} convention "
            f"{sorted(convention.values)}; check the dataset layout or the file"
            + _four_label_note(convention, bad)
        )
    lut = np.zeros(256, dtype=np.uint8)
    for file_value, internal in zip(convention.values, INTERNAL_LABELS, strict=True):
        lut[file_value] = internal
    zooms = img.header.get_zooms()[:3]
    spacing_mm = (float(zooms[0]), float(zooms[1]), float(zooms[2]))
    return lut[labels], np.asarray(img.affine, dtype=np.float64), spacing_mm


def load_raw_label_map(
    path: str | Path,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read a label map as the values stored in the file, without any convention.

    For label schemes with more than three tumour labels (BraTS 2024+ post-treatment
    glioma, pediatric tumours), which have no internal {0, 1, 2, 4} form; the caller
    checks the values against its scheme (``brats_mtl.tasks.check_values``).

    Args:
        path: a 3-D NIfTI label map (``.nii`` or ``.nii.gz``).

    Returns:
        ``(labels, affine, spacing_mm)``: uint8 (X, Y, Z) file values; float64 (4, 4)
        affine; voxel size in mm.

    Raises:
        FileNotFoundError: if the file does not exist.
        CaseDataError: (a ``ValueError``) if the file is unreadable, not 3-D, or holds
            non-integer, non-finite or out-of-range (0..255) values. Names the file.

    Source: NIfTI label files of the BraTS 2017-2025 releases.
    """
    path = Path(path)
    img = _open(path)
    shape = _spatial_shape(img, path)
    labels = _as_uint8_labels(_read(img, path).reshape(shape), path)
    zooms = img.header.get_zooms()[:3]
    spacing_mm = (float(zooms[0]), float(zooms[1]), float(zooms[2]))
    return labels, np.asarray(img.affine, dtype=np.float64), spacing_mm


def write_segmentation(
    labels: np.ndarray,
    reference: Case,
    path: str | Path,
    *,
    convention: LabelConvention | str | None = None,
    overwrite: bool = False,
    scheme: LabelScheme | str | None = None,
) -> Path:
    """Write a label map on the grid of a loaded case, atomically.

    The file gets the reference's shape, affine, qform/sform codes and header fields,
    dtype uint8 and no intensity scaling; its values follow the input dataset's label
    convention (ET = 3 for BraTS 2023 input, MSD values for MSD input) unless
    ``convention`` asks for another.

    Args:
        labels: uint8, shape (X, Y, Z) == ``reference.image.shape[1:]``, internal labels
            {0, 1, 2, 4}.
        reference: the case the labels belong to.
        path: output file; must end in ``.nii.gz`` or ``.nii`` (which is honoured).
            Parent folders are created.
        convention: a :class:`LabelConvention` or its name (``"brats2019"``,
            ``"brats2023"``, ``"msd"``); default: ``reference.files.label_convention``.
        overwrite: replace an existing file.
        scheme: the label scheme of ``brats_mtl.tasks`` (or its name) of the labels. A
            scheme without a three-region convention (``gli-post``, ``ped2024``): the
            labels are already the file values, checked against the scheme and written
            as they are (``convention`` unused). None or any other scheme: internal
            labels, written in ``convention``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
        ValueError: on a wrong shape, labels outside {0, 1, 2, 4} (or outside the
            scheme's labels), an unknown
            convention, a path without a NIfTI extension, or a path that is one of the
            case's input files.

    Source: docs/design.md sections 1 and 5 (written back with the input's affine and header,
    in the input's convention).
    """
    path = Path(path)
    labels = np.asarray(labels)
    expected = tuple(reference.image.shape[1:])
    if labels.shape != expected:
        raise ValueError(
            f"labels for {path} have shape {labels.shape}, but case {reference.case_id} has "
            f"{expected}; uncrop predictions to the original grid before writing"
        )
    inputs = [*reference.files.images.values(), reference.files.seg]
    if any(p is not None and _same_file(p, path) for p in inputs):
        raise ValueError(f"refusing to write {path}: it is an input file of {reference.case_id}")
    scheme = None if scheme is None else get_label_scheme(scheme)
    if scheme is not None and scheme.convention is None:
        out = labels.astype(np.uint8)
        check_values(scheme, np.unique(out).tolist(), path, "prediction")
    else:
        conv = _resolve_convention(convention, reference.files.label_convention)
        try:
            out = conv.from_internal(labels)
        except ValueError as exc:
            raise ValueError(f"cannot write {path}: {exc}") from exc

    if reference.header is None:  # a Case built in memory: a fresh header, codes 1 (scanner)
        ref = nib.Nifti1Header()
        ref["qform_code"], ref["sform_code"] = 1, 1
    else:
        ref = reference.header
    header = ref.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(None, None)  # unset (NaN): stored values are the labels
    header["cal_min"], header["cal_max"] = 0, 0
    img = nib.Nifti1Image(out, reference.affine, header)
    img.set_qform(reference.affine, code=int(ref["qform_code"]))
    img.set_sform(reference.affine, code=int(ref["sform_code"]))
    return save_nifti(img, path, overwrite=overwrite)


def save_nifti(img: nib.Nifti1Image, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save a NIfTI image atomically: a temporary file in the same folder, then a rename.

    Args:
        img: the image.
        path: destination ending in ``.nii.gz`` (compressed) or ``.nii``. Parent folders
            are created.
        overwrite: replace an existing file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
        ValueError: if ``path`` does not end in ``.nii.gz`` or ``.nii``.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii.gz", ".nii")):
        raise ValueError(f"output file {path} must end in .nii.gz or .nii")
    with atomic_output(path, overwrite=overwrite) as tmp:
        nib.save(img, tmp)
    logger.debug("wrote %s", path)
    return path


# --- helpers ---------------------------------------------------------------------------


def _load_modalities(images: dict[str, Path]) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Read the four 3-D modality files into one float32 (4, X, Y, Z) array."""
    missing = [m for m in MODALITIES if m not in images]
    if missing:
        raise ValueError(f"case files lack modalities {missing}; need {list(MODALITIES)}")
    paths = [Path(images[m]) for m in MODALITIES]
    # headers only: nibabel reads the voxels lazily, so the grids are compared first
    imgs = [_open(path) for path in paths]
    shapes = [_spatial_shape(img, path) for img, path in zip(imgs, paths, strict=True)]
    _check_one_grid(
        paths, shapes, [str(s) for s in shapes], lambda a, b: a == b, "shape", "voxel grid"
    )
    affines = [np.asarray(img.affine, dtype=np.float64) for img in imgs]
    _check_one_grid(paths, affines, [_one_line(a) for a in affines], _same_affine, "affine", "grid")
    shape, affine = shapes[0], affines[0]
    # One float32 block; each int16 volume is cast into it, never via a float64 copy.
    image = np.empty((len(MODALITIES), *shape), dtype=np.float32)
    for c, (img, path) in enumerate(zip(imgs, paths, strict=True)):
        image[c] = _read(img, path, np.float32).reshape(shape)
        _check_finite(image[c], path)
    return image, affine, imgs[0].header.copy()


def _check_one_grid(
    paths: list[Path],
    values: list,
    shown: list[str],
    same: Callable[[Any, Any], bool],
    what: str,
    grid: str,
) -> None:
    """Raise naming the odd one out when the four modalities differ in ``what``.

    The majority (three files agreeing) is taken as the case's grid, so the message
    blames the one file that differs; with no majority every file is listed.
    """
    groups: list[list[int]] = []
    for i, value in enumerate(values):
        for group in groups:
            if same(values[group[0]], value):
                group.append(i)
                break
        else:
            groups.append([i])
    if len(groups) == 1:
        return
    largest = max(groups, key=len)
    advice = (
        f"all modalities of a case must share one {grid} (BraTS cases are co-registered): "
        "re-export or replace the odd file"
    )
    if len(largest) > len(values) // 2:
        odd = [i for i in range(len(values)) if i not in largest]
        majority = ", ".join(MODALITIES[i] for i in largest)
        lines = "; ".join(f"{paths[i]} ({MODALITIES[i]}) has {what} {shown[i]}" for i in odd)
        raise CaseDataError(
            f"{lines}, but the other modalities ({majority}, e.g. {paths[largest[0]]}) have "
            f"{shown[largest[0]]}; {advice}"
        )
    listing = "; ".join(f"{paths[i]} ({MODALITIES[i]}): {shown[i]}" for i in range(len(values)))
    raise CaseDataError(f"the modalities differ in {what}, with no majority: {listing}; {advice}")


def _one_line(affine: np.ndarray) -> str:
    """An affine as one line, e.g. ``[[-1, 0, 0, 0], [0, -1, 0, 239], ...]``."""
    rows = (", ".join(f"{v:.8g}" for v in row) for row in np.asarray(affine))
    return "[" + ", ".join(f"[{r}]" for r in rows) + "]"


def _load_msd_image(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Read an MSD Task01 4-D image (X, Y, Z, 4: FLAIR, T1w, T1gd, T2w) as t1, t1ce, t2, flair."""
    path = Path(path)
    img = _open(path)
    if img.ndim != 4 or img.shape[3] != len(MSD_CHANNELS):
        raise CaseDataError(
            f"MSD image {path} has shape {img.shape}; expected (X, Y, Z, 4) with channels "
            "FLAIR, T1w, T1gd, T2w"
        )
    data = _read(img, path, np.float32)
    image = np.empty((len(MODALITIES), *img.shape[:3]), dtype=np.float32)
    for c, modality in enumerate(MODALITIES):
        image[c] = data[..., MSD_CHANNELS.index(modality)]
        _check_finite(image[c], path, f"channel {modality}")
    return image, np.asarray(img.affine, dtype=np.float64), img.header.copy()


def _open(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise FileNotFoundError(f"NIfTI file {path} not found")
    try:
        img = nib.load(path)
    except _READ_ERRORS as exc:
        raise CaseDataError(
            f"cannot read {path} as NIfTI ({type(exc).__name__}: {exc}); the file is "
            "damaged or not NIfTI: copy, download or write it again"
        ) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise CaseDataError(f"{path} is a {type(img).__name__}, not a NIfTI-1/2 image")
    return img


def _read(img: nib.Nifti1Image, path: Path, dtype: type | None = None) -> np.ndarray:
    """The voxel data (scaled as the header says), cast to ``dtype``; errors name ``path``."""
    try:
        return np.asarray(img.dataobj, dtype=dtype)
    except _READ_ERRORS as exc:
        raise CaseDataError(
            f"cannot read the voxels of {path} ({type(exc).__name__}: {exc}); the file is "
            "truncated or damaged: copy, download or write it again"
        ) from exc


def _spatial_shape(img: nib.Nifti1Image, path: Path) -> tuple[int, int, int]:
    """Shape of a 3-D volume; trailing singleton axes (X, Y, Z, 1) are accepted."""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3:
        raise CaseDataError(f"{path} has shape {shape}; expected a 3-D volume")
    if any(s != 1 for s in shape[3:]):
        raise CaseDataError(
            f"{path} has shape {shape}: a stack of {int(np.prod(shape[3:]))} volumes where "
            "one 3-D volume is expected; store one modality per file (4-D images are read "
            "only in the MSD imagesTr/imagesTs layout)"
        )
    return shape[:3]


def _check_finite(volume: np.ndarray, path: Path, what: str = "") -> None:
    finite = np.isfinite(volume)
    if not finite.all():
        n_bad = int(finite.size - np.count_nonzero(finite))
        where = f" ({what})" if what else ""
        raise CaseDataError(
            f"{path}{where} holds {n_bad} NaN/inf voxels; BraTS images must be finite "
            "(background 0): fix or re-export the file"
        )


def _as_uint8_labels(raw: np.ndarray, path: Path) -> np.ndarray:
    """Label values as uint8; float files must hold whole numbers in 0..255."""
    if raw.dtype == np.uint8:
        return raw
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise CaseDataError(f"label map {path} holds NaN/inf values")
        if not np.array_equal(raw, np.round(raw)):
            raise CaseDataError(
                f"label map {path} holds non-integer values; a segmentation stores integer "
                "labels (was an image or a probability map passed?)"
            )
    elif raw.dtype.kind not in "iub":
        raise CaseDataError(f"label map {path} has data type {raw.dtype}; expected integers")
    lo, hi = raw.min(), raw.max()
    if lo < 0 or hi > 255:
        raise CaseDataError(
            f"label map {path} holds values from {lo} to {hi}; BraTS labels are 0..4"
        )
    return raw.astype(np.uint8)


def _infer_convention(present: list[int], path: Path) -> LabelConvention:
    values = set(present)
    if values <= set(BRATS_2019.values):
        return BRATS_2019
    if values <= set(BRATS_2023.values):
        return BRATS_2023
    raise CaseDataError(
        f"label map {path} holds values {sorted(values)}, neither the BraTS 2017-2021 set "
        "{0, 1, 2, 4} nor the BraTS 2023 set {0, 1, 2, 3}; pass the convention explicitly"
    )


def _four_label_note(convention: LabelConvention, bad: list[int]) -> str:
    """Label 4 in a BraTS 2023+ file: a post-treatment (RC) or pediatric 2024+ map."""
    if convention is not BRATS_2023 or bad != [4]:
        return ""
    return (
        ". Label 4 in a BraTS 2023+ file is the resection cavity (post-treatment glioma, "
        "MET 2025+) or, for pediatric tumours 2024+, edema: read these label schemes "
        "(gli-post, ped2024) with --labels gli-post or --labels ped2024 (train, predict, "
        "evaluate)"
    )


def _resolve_convention(
    convention: LabelConvention | str | None, default: LabelConvention
) -> LabelConvention:
    return default if convention is None else get_label_convention(convention)


def _same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=AFFINE_TOLERANCE, atol=AFFINE_TOLERANCE))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
