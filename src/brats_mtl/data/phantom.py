"""A synthetic BraTS-like phantom: an ellipsoidal brain with a tumor, in four contrasts.

The phantom is small and fast (a 64^3 case in a few ms), deterministic for a seed, and can
be written in every layout :func:`~brats_mtl.data.discover_cases` reads, so tests and the
demo run the whole chain without real data. Its contrasts follow how the BraTS sub-regions
look (Menze et al. 2015, Fig. 1; Bakas et al. 2017): enhancing tumor (ET) bright on t1ce,
necrosis (NCR/NET) dark on t1ce and t1, edema (ED) bright on t2 and flair.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from brats_mtl.atomic import write_text_atomic
from brats_mtl.conventions import BRATS_2019, BRATS_2023, ED, ET, MODALITIES, MSD, NCR_NET
from brats_mtl.data.discovery import LAYOUTS, MSD_CHANNELS, SUFFIX_OF_MODALITY, CaseFiles
from brats_mtl.data.io import save_nifti
from brats_mtl.tasks import get_label_scheme

logger = logging.getLogger(__name__)

# Mean intensity per tissue and modality (t1, t1ce, t2, flair), in arbitrary MR-like units.
_WM, _GM = "wm", "gm"
_CONTRAST: dict[str | int, tuple[float, float, float, float]] = {
    _WM: (800.0, 780.0, 350.0, 450.0),
    _GM: (600.0, 620.0, 550.0, 600.0),
    ED: (520.0, 540.0, 900.0, 1000.0),  # bright on t2 and flair
    NCR_NET: (300.0, 250.0, 800.0, 500.0),  # dark on t1 and t1ce
    ET: (560.0, 1300.0, 700.0, 800.0),  # bright on t1ce
}
# Resection cavity / cyst: fluid, dark on t1, t1ce and flair, bright on t2.
_CAVITY_CONTRAST: tuple[float, float, float, float] = (200.0, 180.0, 1200.0, 250.0)
# Internal {0, 1, 2, 4} -> file values of the four-label schemes, and the cavity's value.
_FOUR_LABEL_MAPS: dict[str, tuple[dict[int, int], int]] = {
    "gli-post": ({0: 0, NCR_NET: 1, ED: 2, ET: 3}, 4),  # 1 NETC, 2 SNFH, 3 ET, 4 RC
    "ped2024": ({0: 0, NCR_NET: 2, ED: 4, ET: 1}, 3),  # 1 ET, 2 NET, 3 CC, 4 ED
}
# A vessel: enhances on t1ce (less than ET, more than any other tissue) and is a flow void
# (dark) on t2 and flair. Not tumor: its voxels keep the edema label
# (``make_phantom(enhancing_vessel=True)``).
_VESSEL = (600.0, 1000.0, 300.0, 300.0)
_MIN_BRAIN_VALUE = 1.0  # brain voxels are >= this in every modality; background is 0
_NAME_MAPPING_COLUMNS = (
    "Grade",
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)


def make_phantom(
    shape: tuple[int, int, int] = (64, 64, 64),
    *,
    with_et: bool = True,
    seed: int | np.random.Generator = 0,
    labels: str | None = None,
    enhancing_vessel: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic case.

    An ellipsoidal brain (white matter core, grey matter shell) holds a tumor: an
    NCR/NET core inside an ET rim (the whole core is NCR/NET when ``with_et`` is False),
    surrounded by edema. Position, size and shape of brain and tumor, a smooth bias field
    and the noise come from ``seed``.

    With ``enhancing_vessel``, a straight vessel about 2 voxels across runs through the
    edema beside the tumor core: bright on t1ce (less than ET), dark on t2 and flair,
    and labeled as the edema it crosses (annotators do not label vessels ET). Enhancing
    vessels in and next to a tumor are a usual source of false-positive ET, which the ET
    classifier and its suppression rule are meant to remove (paper 4.2, Enhancing Tumor
    Detection).

    Args:
        shape: volume shape (X, Y, Z) in voxels (1 mm); each axis >= 16.
        with_et: whether the tumor has an enhancing rim.
        seed: an int seed or a :class:`numpy.random.Generator`.
        labels: label scheme (``brats_mtl.tasks``); None or a three-label scheme gives
            the internal {0, 1, 2, 4} labels. ``gli-post`` and ``ped2024`` give their
            file values, with a fluid-filled cavity (RC, resp. CC) inside the necrosis.
        enhancing_vessel: add the vessel described above. Brain, tumor and labels are
            those of the same seed without it (the vessel is drawn after them); texture
            and noise differ.

    Returns:
        ``(image, labels)``: image float32 (4, X, Y, Z), channels ``t1, t1ce, t2, flair``,
        whole-numbered values >= 1 inside the brain and exactly 0 outside (so
        ``brain_mask`` recovers the ellipsoid); labels uint8 (X, Y, Z), internal
        {0, 1, 2, 4} (file values of a four-label scheme), zero outside the brain.

    Raises:
        ValueError: if an axis of ``shape`` is below 16, or on an unknown scheme.
    """
    scheme = None if labels is None else get_label_scheme(labels).name
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"phantom shape must be 3 axes of at least 16 voxels, got {shape}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    size = np.asarray(shape, dtype=np.float32)
    axes = [np.arange(n, dtype=np.float32) for n in shape]

    # Brain: an ellipsoid filling ~75-85 % of each axis, slightly off centre.
    centre = size / 2 + rng.uniform(-0.03, 0.03, 3).astype(np.float32) * size
    semi = size * rng.uniform(0.37, 0.42, 3).astype(np.float32)
    brain_r = _ellipsoid_radius(axes, centre, semi)
    brain = brain_r <= 1.0

    # Tumor: edema reaches at most 0.3 + 0.45 * 1.15 < 0.85 of the brain's radius.
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    offset = direction * rng.uniform(0.0, 0.3)
    t_centre = centre + (offset * semi).astype(np.float32)
    t_semi = (semi * rng.uniform(0.3, 0.45) * rng.uniform(0.85, 1.15, 3)).astype(np.float32)
    tumor_r = _ellipsoid_radius(axes, t_centre, t_semi)
    core_r = rng.uniform(0.45, 0.55)  # tumor core (ET + NCR/NET) radius
    necrosis_r = core_r * rng.uniform(0.5, 0.7)  # NCR/NET inside the ET rim

    labels = np.zeros(shape, dtype=np.uint8)
    labels[tumor_r <= 1.0] = ED
    if with_et:
        labels[tumor_r <= core_r] = ET
        labels[tumor_r <= necrosis_r] = NCR_NET
    else:
        labels[tumor_r <= core_r] = NCR_NET
    # On coarse grids thin shells can vanish or leak: keep the centre voxel NCR/NET, close
    # the ET rim around NCR/NET and the edema around the core (6-connected). Done on the
    # tumor's box (a view), which holds the edema ellipsoid plus a margin.
    labels[tuple(np.clip(np.rint(t_centre).astype(np.intp), 0, np.asarray(shape) - 1))] = NCR_NET
    box = tuple(
        slice(max(0, int(c - r) - 2), min(n, int(c + r) + 3))
        for c, r, n in zip(t_centre, t_semi, shape, strict=True)
    )
    tumor = labels[box]
    ncr = tumor == NCR_NET
    if with_et:
        tumor[ndimage.binary_dilation(ncr) & ~ncr] = ET
    core = (tumor == NCR_NET) | (tumor == ET)
    tumor[ndimage.binary_dilation(core) & (tumor == 0)] = ED
    labels[~brain] = 0
    cavity = None
    if scheme in _FOUR_LABEL_MAPS:
        cavity = (tumor_r <= necrosis_r * 0.6) & (labels == NCR_NET)
        cavity[tuple(np.clip(np.rint(t_centre).astype(np.intp), 0, np.asarray(shape) - 1))] = False
    vessel = None
    if enhancing_vessel:
        vessel = _vessel_mask(rng, axes, t_centre, t_semi, core_r) & (labels == ED)

    # Tissue means per voxel, one channel at a time.
    tissue = np.where(brain_r <= 0.7, 0, 1).astype(np.uint8)  # 0 white matter, 1 grey matter
    bias = _smooth_field(rng, shape, scale=0.08)  # multiplicative bias field, ~ +-8 %
    image = np.empty((len(MODALITIES), *shape), dtype=np.float32)
    for c in range(len(MODALITIES)):
        means = np.array([_CONTRAST[_WM][c], _CONTRAST[_GM][c]], dtype=np.float32)
        lut = np.zeros(256, dtype=np.float32)
        for label in (NCR_NET, ED, ET):
            lut[label] = _CONTRAST[label][c]
        channel = np.where(labels > 0, lut[labels], means[tissue])
        if cavity is not None:
            channel[cavity] = _CAVITY_CONTRAST[c]
        if vessel is not None:
            channel[vessel] = _VESSEL[c]
        texture = _smooth_field(rng, shape, scale=0.05)  # smooth tissue texture
        noise = rng.random(shape, dtype=np.float32) - np.float32(0.5)  # uniform, std 0.29
        noise *= np.float32(0.07)  # std 0.02
        channel *= (1.0 + bias) * (1.0 + texture + noise)
        np.rint(channel, out=channel)
        np.maximum(channel, _MIN_BRAIN_VALUE, out=channel)
        channel[~brain] = 0.0
        image[c] = channel
    if cavity is not None:
        mapping, cavity_value = _FOUR_LABEL_MAPS[scheme]
        lut = np.zeros(256, dtype=np.uint8)
        for internal, value in mapping.items():
            lut[internal] = value
        labels = lut[labels]
        labels[cavity] = cavity_value
    return image, labels


def write_phantom_case(
    root: str | Path,
    case_id: str,
    *,
    layout: str = "brats2021",
    shape: tuple[int, int, int] = (64, 64, 64),
    labeled: bool = True,
    with_et: bool = True,
    seed: int | np.random.Generator = 0,
    compress: bool = True,
    grade: str | None = None,
    overwrite: bool = False,
    labels: str | None = None,
    enhancing_vessel: bool = False,
) -> CaseFiles:
    """Write one phantom case (:func:`make_phantom`) under ``root`` in a BraTS layout.

    Files written per layout (``ext`` is ``.nii.gz`` or, with ``compress=False``, ``.nii``):

    - ``brats2018``: ``root/<grade>/<id>/<id>_t1<ext>`` ..., ``<id>_seg<ext>``; an
      unlabeled case goes to ``root/<id>/`` without grade, as in the validation release;
    - ``brats2020``: ``root/<id>/<id>_t1<ext>`` ..., and a row in ``root/name_mapping.csv``;
    - ``brats2021``: ``root/<id>/<id>_t1<ext>`` ...;
    - ``brats2023``: ``root/<id>/<id>-t1n<ext>``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``
      (ET = 3);
    - ``msd``: ``root/imagesTr/<id><ext>`` (4-D: FLAIR, T1w, T1gd, T2w) and
      ``root/labelsTr/<id><ext>`` (MSD labels); unlabeled cases go to ``root/imagesTs``.

    Images are int16 on a BraTS-like LPS grid (1 mm, qform/sform code 1).

    Args:
        root: dataset folder (created).
        case_id: the case ID, e.g. ``"BraTS2021_00000"``; used for folder and file names.
        layout: one of ``brats2018``, ``brats2020``, ``brats2021``, ``brats2023``, ``msd``.
        shape: volume shape (X, Y, Z).
        labeled: write the segmentation.
        with_et: tumor with enhancing rim.
        seed: int seed or generator (see :func:`make_phantom`).
        compress: ``.nii.gz`` when True, ``.nii`` otherwise.
        grade: ``"HGG"``/``"LGG"`` for labeled cases of the layouts that record grades
            (brats2018, brats2020); default ``"HGG"``. Ignored otherwise.
        overwrite: replace existing files of this case.
        labels: label scheme of the segmentation (see :func:`make_phantom`); a
            four-label scheme (``gli-post``, ``ped2024``) needs the ``brats2023`` layout
            and writes its values as they are.
        enhancing_vessel: add an enhancing vessel beside the tumor (see
            :func:`make_phantom`).

    Returns:
        The :class:`CaseFiles` record, equal to what ``discover_cases(root)`` finds.

    Raises:
        ValueError: on an unknown layout or grade, or a case ID that is not a plain name;
            a four-label scheme with a layout other than ``brats2023``.
        FileExistsError: if a file of the case exists and ``overwrite`` is False.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    if not case_id or Path(case_id).name != case_id or case_id.startswith("."):
        raise ValueError(f"case ID {case_id!r} must be a plain file name")
    grade = (grade or "HGG").upper()
    if grade not in ("HGG", "LGG"):
        raise ValueError(f"grade must be 'HGG' or 'LGG', got {grade!r}")
    root = Path(root)
    ext = ".nii.gz" if compress else ".nii"
    scheme = labels
    four_labels = scheme is not None and _four_label(scheme)
    if four_labels and layout != "brats2023":
        raise ValueError(f"the {scheme} label scheme needs the brats2023 layout, not {layout}")
    image, labels = make_phantom(
        shape, with_et=with_et, seed=seed, labels=scheme, enhancing_vessel=enhancing_vessel
    )
    affine = _brats_affine(image.shape[1:])

    if layout == "msd":
        folder = root / ("imagesTr" if labeled else "imagesTs")
        path = folder / f"{case_id}{ext}"
        stack = np.stack([image[MODALITIES.index(m)] for m in MSD_CHANNELS], axis=-1)
        save_nifti(_nifti(stack, affine, np.int16), path, overwrite=overwrite)
        seg = None
        if labeled:
            seg = root / "labelsTr" / f"{case_id}{ext}"
            save_nifti(
                _nifti(MSD.from_internal(labels), affine, np.uint8), seg, overwrite=overwrite
            )
        files = CaseFiles(case_id, "msd", {m: path for m in MODALITIES}, seg, None, MSD)
        logger.debug("wrote phantom case %s (%s) under %s", case_id, layout, root)
        return files

    if layout == "brats2018" and labeled:
        folder = root / grade / case_id
    else:
        folder = root / case_id
    style, sep = ("brats2023", "-") if layout == "brats2023" else ("legacy", "_")
    convention = BRATS_2023 if layout == "brats2023" else BRATS_2019
    images = {}
    for c, modality in enumerate(MODALITIES):
        path = folder / f"{case_id}{sep}{SUFFIX_OF_MODALITY[style][modality]}{ext}"
        save_nifti(_nifti(image[c], affine, np.int16), path, overwrite=overwrite)
        images[modality] = path
    seg = None
    if labeled:
        seg = folder / f"{case_id}{sep}seg{ext}"
        values = labels if four_labels else convention.from_internal(labels)
        save_nifti(_nifti(values, affine, np.uint8), seg, overwrite=overwrite)
    case_grade = None
    if layout == "brats2018" and labeled:
        case_grade = grade
    elif layout == "brats2020" and labeled:
        _add_name_mapping_row(root / "name_mapping.csv", case_id, grade)
        case_grade = grade
    logger.debug("wrote phantom case %s (%s) under %s", case_id, layout, root)
    return CaseFiles(case_id, layout, images, seg, case_grade, convention)


def write_phantom_cohort(
    root: str | Path,
    *,
    n_labeled: int = 4,
    n_unlabeled: int = 1,
    layout: str | None = None,
    shape: tuple[int, int, int] = (64, 64, 64),
    seed: int = 0,
    compress: bool = True,
    overwrite: bool = False,
    labels: str | None = None,
) -> list[CaseFiles]:
    """Write a small synthetic cohort in one layout.

    Every fourth labeled case (index 3, 7, ...) has no ET, so ET-presence stratification
    and ET suppression have something to do; grades alternate HGG, LGG over the labeled
    cases where the layout records grades. Unlabeled cases follow the labeled ones in
    numbering (brats2018: in the root without grade folder, as in a validation release;
    brats2020: not in ``name_mapping.csv``; msd: in ``imagesTs``).

    Case IDs: ``BraTS19_PHANTOM_<i>_1`` (brats2018), ``BraTS20_Training_<iii>``
    (brats2020), ``BraTS2021_<iiiii>`` (brats2021), ``BraTS-GLI-<iiiii>-000``
    (brats2023), ``BRATS_<iii>`` (msd), numbered from 1 (MSD, 2018, 2020) or 0; with
    ``labels="gli-post"`` ``BraTS-GLI-<iiiii>-100`` (post-treatment timepoint), with
    ``labels="ped2024"`` ``BraTS-PED-<iiiii>-000``.

    Args:
        root: dataset folder (created).
        n_labeled: number of cases with a segmentation.
        n_unlabeled: number of cases without one.
        layout: see :func:`write_phantom_case`; default ``brats2023`` for a 2023+ label
            scheme, else ``brats2021``.
        shape: volume shape (X, Y, Z) of every case.
        seed: cohort seed; each case gets its own stream derived from it.
        compress: ``.nii.gz`` when True, ``.nii`` otherwise.
        overwrite: replace existing files.
        labels: label scheme of every case (see :func:`make_phantom`).

    Returns:
        The cases, sorted by ``case_id`` (as :func:`discover_cases` returns them).

    Raises:
        ValueError: on an unknown layout or negative counts.
    """
    if n_labeled < 0 or n_unlabeled < 0:
        raise ValueError(f"case counts must be >= 0, got {n_labeled} and {n_unlabeled}")
    if layout is None:
        era = None if labels is None else get_label_scheme(labels).era
        layout = "brats2023" if era == "2023+" else "brats2021"
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    streams = np.random.SeedSequence(seed).spawn(n_labeled + n_unlabeled)
    cases = []
    for i, stream in enumerate(streams):
        labeled = i < n_labeled
        case_id = _phantom_case_id(layout, i, labels)
        files = write_phantom_case(
            root,
            case_id,
            layout=layout,
            shape=shape,
            labeled=labeled,
            with_et=i % 4 != 3,
            seed=np.random.default_rng(stream),
            compress=compress,
            grade="HGG" if i % 2 == 0 else "LGG",
            overwrite=overwrite,
            labels=labels,
        )
        cases.append(files)
    return sorted(cases, key=lambda c: c.case_id)


# --- helpers ---------------------------------------------------------------------------


def _vessel_mask(
    rng: np.random.Generator,
    axes: list[np.ndarray],
    t_centre: np.ndarray,
    t_semi: np.ndarray,
    core_r: float,
) -> np.ndarray:
    """A straight tube of radius 1 voxel through the tumor, beside the core.

    The caller keeps the tube's part in the edema.

    The line runs in a random direction and passes the tumor centre on a random side, at
    ``(core_r + 1) / 2`` of the tumor's semi-axes from it (half way between the core's
    edge and the edema's). Returns bool (X, Y, Z).
    """
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    side = rng.normal(size=3)
    side -= side.dot(direction) * direction
    side /= np.linalg.norm(side)
    point = t_centre + side * t_semi * (core_r + 1.0) / 2.0
    # squared distance to the line: |d|^2 - (d . direction)^2, with d = voxel - point
    d = [a - p for a, p in zip(axes, point, strict=True)]
    d2 = d[0][:, None, None] ** 2 + d[1][None, :, None] ** 2 + d[2][None, None, :] ** 2
    along = (
        d[0][:, None, None] * direction[0]
        + d[1][None, :, None] * direction[1]
        + d[2][None, None, :] * direction[2]
    )
    return d2 - along**2 <= 1.0


def _ellipsoid_radius(axes: list[np.ndarray], centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Normalised ellipsoidal radius (1 on the surface), float32 (X, Y, Z), by broadcasting."""
    x = ((axes[0] - centre[0]) / semi[0]) ** 2
    y = ((axes[1] - centre[1]) / semi[1]) ** 2
    z = ((axes[2] - centre[2]) / semi[2]) ** 2
    return np.sqrt(x[:, None, None] + y[None, :, None] + z[None, None, :])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Smooth random field, float32 (X, Y, Z), std ~ ``scale``: coarse noise, upsampled.

    Noise on an 8x coarser grid, linearly interpolated one axis at a time by gathering
    neighbours: ~1 ms at 64^3, where scipy.ndimage.zoom took ~50 ms (measured).
    """
    coarse_shape = tuple(max(2, n // 8) for n in shape)
    field = rng.standard_normal(coarse_shape, dtype=np.float32) * np.float32(scale)
    for axis, (n, m) in enumerate(zip(shape, coarse_shape, strict=True)):
        pos = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, m - 1)
        lo = np.minimum(np.floor(pos).astype(np.intp), m - 2)
        frac = (pos - lo).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        below = np.take(field, lo, axis=axis)
        field = below + (np.take(field, lo + 1, axis=axis) - below) * frac
    return field


def _brats_affine(shape: tuple[int, ...]) -> np.ndarray:
    """The BraTS release grid: 1 mm, LPS (x and y flipped), origin at (0, Y-1, 0)."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    return affine


def _nifti(data: np.ndarray, affine: np.ndarray, dtype: type) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def _four_label(scheme: str) -> bool:
    """True for a scheme with four tumour labels (its file values are its labels)."""
    return get_label_scheme(scheme).name in _FOUR_LABEL_MAPS


def _phantom_case_id(layout: str, i: int, scheme: str | None = None) -> str:
    if layout == "brats2023" and scheme is not None:
        name = get_label_scheme(scheme).name
        if name == "gli-post":
            return f"BraTS-GLI-{i:05d}-100"
        if name == "ped2024":
            return f"BraTS-PED-{i:05d}-000"
    return {
        "brats2018": f"BraTS19_PHANTOM_{i + 1:03d}_1",
        "brats2020": f"BraTS20_Training_{i + 1:03d}",
        "brats2021": f"BraTS2021_{i:05d}",
        "brats2023": f"BraTS-GLI-{i:05d}-000",
        "msd": f"BRATS_{i + 1:03d}",
    }[layout]


def _add_name_mapping_row(path: Path, case_id: str, grade: str) -> None:
    """Add (or update) ``case_id`` in a BraTS 2020 ``name_mapping.csv``, atomically."""
    rows: list[dict[str, str]] = []
    if path.exists():
        with path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("BraTS_2020_subject_ID") != case_id]
    rows.append(
        {c: "NA" for c in _NAME_MAPPING_COLUMNS}
        | {
            "Grade": grade,
            "BraTS_2020_subject_ID": case_id,
        }
    )
    rows.sort(key=lambda r: r.get("BraTS_2020_subject_ID", ""))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_NAME_MAPPING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue(), overwrite=True)
