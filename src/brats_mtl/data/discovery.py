"""Find BraTS cases on disk, whatever the challenge year's folder layout.

Layouts read (docs/design.md section 1), ``.nii`` and ``.nii.gz`` alike:

========== =========================================================== ================
layout     example                                                     grade
========== =========================================================== ================
brats2018  ``HGG/BraTS19_CBICA_AAB_1/BraTS19_CBICA_AAB_1_t1ce.nii.gz``  ``HGG``/``LGG`` folder
brats2020  ``BraTS20_Training_001/BraTS20_Training_001_flair.nii``     ``name_mapping.csv``
brats2021  ``BraTS2021_00000/BraTS2021_00000_t2.nii.gz``               unknown
brats2023  ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz``      unknown
msd        ``imagesTr/BRATS_001.nii.gz`` (4-D) + ``labelsTr/BRATS_001.nii.gz``  unknown
========== =========================================================== ================

A case folder is any folder holding NIfTI files named ``<case id><sep><modality>.nii[.gz]``
with ``sep`` one of ``_``/``-`` and ``modality`` one of the BraTS suffixes
(``t1 t1ce t2 flair seg`` up to 2021; ``t1n t1c t2w t2f seg`` from 2023 on). The suffix must
match exactly, so ``_t1.nii.gz`` never matches ``_t1ce.nii.gz``. Folders of different
layouts and ID styles may sit side by side under one root; the root may also be a single
case folder. A broken case folder (a modality missing, two files for one modality) stops
discovery, or with ``discover_cases(root, invalid=[...])`` is collected for the caller to
report as failed (prediction does). :func:`discover_label_maps` finds label maps alone
(evaluation references): case folders with or without images, flat folders of label
files, MSD ``labelsTr``.
Sources: the BraTS 2018-2023 training-data releases and the Medical Segmentation Decathlon
Task01 ``dataset.json``.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from brats_mtl.conventions import (
    BRATS_2019,
    BRATS_2023,
    MODALITIES,
    MSD,
    LabelConvention,
    plural,
)

logger = logging.getLogger(__name__)

#: Layout names of :attr:`CaseFiles.layout`.
LAYOUTS: tuple[str, ...] = ("brats2018", "brats2020", "brats2021", "brats2023", "msd")

#: File suffix -> internal modality, BraTS 2017-2021 naming.
LEGACY_SUFFIXES: dict[str, str] = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}
#: File suffix -> internal modality, BraTS 2023+ naming (t1n native T1, t1c contrast T1,
#: t2w T2-weighted, t2f T2-FLAIR).
BRATS2023_SUFFIXES: dict[str, str] = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}
#: Internal modality -> file suffix, per naming style (used when writing cases).
SUFFIX_OF_MODALITY: dict[str, dict[str, str]] = {
    "legacy": {m: s for s, m in LEGACY_SUFFIXES.items()},
    "brats2023": {m: s for s, m in BRATS2023_SUFFIXES.items()},
}
#: MSD Task01 channel order of the 4-D image (dataset.json "modality": FLAIR, T1w, T1gd, T2w).
MSD_CHANNELS: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")

_NIFTI_RE = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_CASE_FILE_RE = re.compile(
    r"^(?P<case>.+)[_-](?P<suffix>t1ce|t1n|t1c|t2w|t2f|t1|t2|flair|seg)\.nii(?:\.gz)?$",
    re.IGNORECASE,
)
# BraTS 2017-2019 IDs (Brats17_..., Brats18_..., BraTS19_...) and 2020 IDs (BraTS20_...).
_ID_2018_RE = re.compile(r"^brats1[789]_", re.IGNORECASE)
_ID_2020_RE = re.compile(r"^brats20_", re.IGNORECASE)
# Case IDs of every BraTS release and of MSD Task01: Brats17_..., Brats18_..., BraTS19_...,
# BraTS20_Training_001, BraTS2021_00000, BraTS-GLI-00000-000 (2023+), BRATS_001 (MSD).
_BRATS_ID_RE = re.compile(r"^brats(\d{2,4})?[_-]", re.IGNORECASE)
_GRADES = ("HGG", "LGG")
_NAME_MAPPING = "name_mapping.csv"
_MAX_DEPTH = 4  # folder levels searched below the root
_MSD_DIRS = ("imagesTr", "imagesTs", "labelsTr", "labelsTs")


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case, as found on disk.

    Attributes:
        case_id: e.g. ``"BraTS2021_00000"``, ``"BraTS-GLI-00000-000"``, ``"BRATS_001"``.
        layout: one of :data:`LAYOUTS`.
        images: internal modality (``t1``, ``t1ce``, ``t2``, ``flair``) -> NIfTI file; for
            the MSD layout all four map to the one 4-D file.
        seg: segmentation file, or ``None`` for an unlabeled case.
        grade: ``"HGG"``/``"LGG"`` when the layout records it (2018/2019 folders, 2020
            ``name_mapping.csv``), else ``None``.
        label_convention: how ``seg`` encodes the tumor sub-regions (BraTS 2019, BraTS 2023
            or MSD; see :mod:`brats_mtl.conventions`).
    """

    case_id: str
    layout: str
    images: dict[str, Path] = field(hash=False)
    seg: Path | None
    grade: str | None
    label_convention: LabelConvention

    @property
    def labeled(self) -> bool:
        """True when the case has a segmentation file."""
        return self.seg is not None


@dataclass(frozen=True)
class _BrokenCase:
    """A case whose folder cannot be read as a case (``discover_cases(invalid=...)``)."""

    case_id: str
    folder: Path
    message: str


def discover_cases(
    root: str | Path,
    *,
    invalid: list[tuple[str, str]] | None = None,
    consequence: str = "it will be reported as failed",
) -> list[CaseFiles]:
    """Find every case under ``root``, in any supported layout.

    Args:
        root: a dataset folder (any layout, layouts may be mixed), an MSD task folder
            (with ``imagesTr``/``imagesTs``), or a single case folder.
        invalid: None (default): a case folder that cannot be read as a case raises.
            A list: such cases are left out of the result, logged one warning each
            (``"<case>: <problem>; <consequence>"``) and
            ``(case_id, message)`` is appended for each, sorted by case ID, once the
            whole root has been read without a cohort error. The message is the one
            that would have been raised (it names the folder and the files found).
            Collected: a case lacking a modality, two files for one modality (e.g.
            ``.nii`` beside ``.nii.gz``, or both naming styles), two segmentation files.
            A folder holding several cases has each case judged alone. Used by
            prediction, where one broken case must not stop the cohort, and by training,
            which reports every broken case at once.
        consequence: the end of each warning on a broken case: what the caller does
            with it (prediction: "it will be reported as failed"; training: "it cannot
            be used for training").

    Returns:
        The readable cases sorted by ``case_id``. Unlabeled cases (no segmentation file,
        or MSD ``imagesTs``) have ``seg=None``.

    Raises:
        FileNotFoundError: if ``root`` does not exist or is not a folder.
        ValueError: if no case is found (names ``root``; with ``invalid``, only when no
            case folder was found either, readable or not); if one case ID occurs twice
            (names both places; with ``invalid``, broken cases count too); if an MSD
            task folder is broken (a training image without label, two label files);
            without ``invalid``, also if a case folder lacks a modality or holds two
            files for one modality or two segmentations (names the folder and files).
            Nothing is appended to ``invalid`` when an error is raised.

    Source: docs/design.md section 1; BraTS 2018-2023 and MSD Task01 release layouts.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is a file; pass the folder holding the case folders (or one case folder)"
        )
    cases: list[CaseFiles] = []
    broken: list[_BrokenCase] | None = None if invalid is None else []
    grade_tables: dict[Path, dict[str, str]] = {}  # name_mapping.csv files read so far
    for folder, is_msd, filenames in _walk(root):
        if is_msd:
            cases.extend(_discover_msd(folder))
        cases.extend(_discover_case_folder(folder, filenames, root, grade_tables, broken))
    broken = broken or []
    if not cases and not broken:
        raise ValueError(
            f"no BraTS cases found under {root}: expected case folders such as "
            "BraTS2021_00000/BraTS2021_00000_t1.nii.gz (also HGG/LGG sub-folders, BraTS 2023 "
            "names BraTS-GLI-00000-000-t1n.nii.gz) or an MSD task folder with imagesTr/"
        )
    seen: dict[str, Path] = {}
    for case_id, where in [(c.case_id, _where(c)) for c in cases] + [
        (b.case_id, b.folder) for b in broken
    ]:
        if case_id in seen:
            raise ValueError(
                f"case {case_id} found twice: {seen[case_id]} and {where}; "
                "keep one copy under the data folder"
            )
        seen[case_id] = where
    cases.sort(key=lambda c: c.case_id)
    n_labeled = sum(c.labeled for c in cases)
    if broken:
        logger.info(
            "found %s under %s: %d readable (%d labeled), %d unreadable",
            plural(len(cases) + len(broken), "case"),
            root,
            len(cases),
            n_labeled,
            len(broken),
        )
    else:
        logger.info("found %s (%d labeled) under %s", plural(len(cases), "case"), n_labeled, root)
    if broken:
        broken.sort(key=lambda b: b.case_id)
        # say what the caller does with these cases, not "skipped"
        for b in broken:
            logger.warning("%s: %s; %s", b.case_id, b.message, consequence)
        invalid.extend((b.case_id, b.message) for b in broken)
    return cases


def _where(case: CaseFiles) -> Path:
    return next(iter(case.images.values())).parent


def _walk(root: Path):
    """Yield (folder, is an MSD task folder, NIfTI file names), _MAX_DEPTH levels deep."""
    base_depth = len(root.parts)
    # Symlinked case folders are followed; the depth limit stops link cycles.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        folder = Path(dirpath)
        is_msd = "imagesTr" in dirnames or "imagesTs" in dirnames
        # Hidden folders and MSD sub-folders (read by _discover_msd) are not case folders.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _MSD_DIRS)
        if len(folder.parts) - base_depth >= _MAX_DEPTH:
            dirnames[:] = []
        yield folder, is_msd, sorted(f for f in filenames if _is_nifti(f))


def _is_nifti(name: str) -> bool:
    # "._*" are macOS resource forks shipped inside the MSD archive, not images.
    return not name.startswith(".") and _NIFTI_RE.search(name) is not None


def _group_case_files(
    names: list[str],
) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """File names grouped by case ID and suffix.

    Returns:
        case ID -> lower-case suffix (t1, seg, ...) -> names, and the names that match no
        ``<ID>_<suffix>`` pattern.
    """
    groups: dict[str, dict[str, list[str]]] = {}
    unmatched: list[str] = []
    for name in names:
        match = _CASE_FILE_RE.match(name)
        if match is None:
            unmatched.append(name)
            continue
        groups.setdefault(match["case"], {}).setdefault(match["suffix"].lower(), []).append(name)
    return groups, unmatched


def _discover_case_folder(
    folder: Path,
    filenames: list[str],
    root: Path,
    grade_tables: dict[Path, dict[str, str]],
    broken: list[_BrokenCase] | None,
) -> list[CaseFiles]:
    """Cases whose files lie in ``folder`` (usually one; a flat folder may hold several).

    A case that cannot be read raises, or is appended to ``broken`` when that is a list.
    """
    groups, unmatched = _group_case_files(filenames)
    _check_supported(folder, groups, filenames)
    # A group with only a segmentation (e.g. a folder of predictions) is not a case.
    groups = {cid: g for cid, g in groups.items() if set(g) - {"seg"}}
    if not groups:
        return []
    cases = []
    for case_id, by_suffix in sorted(groups.items()):
        seg_names = by_suffix.pop("seg", [])
        if not seg_names and len(groups) == 1:
            # BraTS 2020 case 355 ships its label map as W39_1998.09.19_Segm.nii.
            seg_like = [n for n in unmatched if "seg" in n.lower()]
            if len(seg_like) == 1:
                logger.info("%s: using %s as the segmentation", folder, seg_like[0])
                seg_names = seg_like
            elif seg_like:
                logger.warning(
                    "%s: no %s_seg file and several candidates %s; case read as unlabeled",
                    folder,
                    case_id,
                    seg_like,
                )
        try:
            images = _case_images(folder, case_id, by_suffix, seg_names)
        except ValueError as exc:
            if broken is None:
                raise
            broken.append(_BrokenCase(case_id, folder, str(exc)))
            continue
        cases.append(
            _case_from_group(folder, case_id, by_suffix, images, seg_names, root, grade_tables)
        )
    return cases


def _case_images(
    folder: Path, case_id: str, by_suffix: dict[str, list[str]], seg_names: list[str]
) -> dict[str, Path]:
    """Internal modality -> image file of one case; ValueError when the case is broken."""
    images: dict[str, list[str]] = {}
    for suffix, names in by_suffix.items():
        modality = LEGACY_SUFFIXES.get(suffix) or BRATS2023_SUFFIXES[suffix]
        images.setdefault(modality, []).extend(names)
    for modality, names in images.items():
        if len(names) > 1:
            raise ValueError(
                f"case folder {folder} holds {len(names)} files for modality {modality}: "
                f"{sorted(names)}; keep exactly one (.nii or .nii.gz, one naming style)"
            )
    if len(seg_names) > 1:
        raise ValueError(
            f"case folder {folder} holds {len(seg_names)} segmentation files: "
            f"{sorted(seg_names)}; keep exactly one"
        )
    missing = [m for m in MODALITIES if m not in images]
    if missing:
        raise ValueError(
            f"case folder {folder} (case {case_id}) lacks modality {', '.join(missing)}: "
            f"found {sorted(n for names in by_suffix.values() for n in names)}; every case "
            f"needs {case_id}_t1, _t1ce, _t2, _flair (or -t1n, -t1c, -t2w, -t2f) .nii[.gz]"
            + _missing_modality_note(by_suffix)
        )
    return {m: folder / images[m][0] for m in MODALITIES}


def _case_from_group(
    folder: Path,
    case_id: str,
    by_suffix: dict[str, list[str]],
    images: dict[str, Path],
    seg_names: list[str],
    root: Path,
    grade_tables: dict[Path, dict[str, str]],
) -> CaseFiles:
    """The case of a group of files already checked by :func:`_case_images`."""
    new_style = any(s in BRATS2023_SUFFIXES for s in by_suffix)
    grade = None
    if new_style:
        layout, convention = "brats2023", BRATS_2023
    else:
        convention = BRATS_2019
        if folder.parent.name.upper() in _GRADES:
            layout, grade = "brats2018", folder.parent.name.upper()
        elif _ID_2018_RE.match(case_id):
            layout = "brats2018"
        elif _ID_2020_RE.match(case_id):
            layout = "brats2020"
        else:
            layout = "brats2021"
        if grade is None:
            grade = _grade_from_name_mapping(folder, root, case_id, grade_tables)
    return CaseFiles(
        case_id=case_id,
        layout=layout,
        images=images,
        seg=folder / seg_names[0] if seg_names else None,
        grade=grade,
        label_convention=convention,
    )


def _grade_from_name_mapping(
    folder: Path, root: Path, case_id: str, tables: dict[Path, dict[str, str]]
) -> str | None:
    """Grade of ``case_id`` from a ``name_mapping.csv``, None when no table lists it.

    The tables are looked for in the folders from the case up to the parent of ``root``
    (the 2020 release keeps it beside the case folders).
    """
    for parent in (folder, *folder.parents):
        path = parent / _NAME_MAPPING
        if path not in tables:
            tables[path] = _read_name_mapping(path) if path.is_file() else {}
        table = tables[path]
        if case_id in table:
            return table[case_id]
        if parent == root.parent:
            break
    return None


def _read_name_mapping(path: Path) -> dict[str, str]:
    """Case ID (any year's ID column) -> grade, from a BraTS ``name_mapping.csv``.

    Columns as released: ``Grade,BraTS_2017_subject_ID,...,BraTS_2020_subject_ID``.
    """
    table: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        grade_col = next((f for f in fields if f.strip().lower() == "grade"), None)
        if grade_col is None:
            logger.warning("%s has no Grade column (columns %s); grades unknown", path, fields)
            return table
        id_cols = [f for f in fields if f != grade_col and "id" in f.lower()]
        for row in reader:
            grade = (row.get(grade_col) or "").strip().upper()
            if grade not in _GRADES:
                continue
            for col in id_cols:
                value = (row.get(col) or "").strip()
                if value and value.upper() != "NA":
                    table[value] = grade
    return table


def _discover_msd(task_folder: Path) -> list[CaseFiles]:
    """Cases of an MSD Task01 folder: ``imagesTr`` + ``labelsTr``; ``imagesTs`` unlabeled."""
    cases = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        image_folder = task_folder / images_dir
        if not image_folder.is_dir():
            continue
        label_folder = task_folder / labels_dir
        for name in sorted(os.listdir(image_folder)):
            if not _is_nifti(name):
                continue
            case_id = _NIFTI_RE.sub("", name)
            seg = _msd_label(label_folder, case_id)
            if seg is None and images_dir == "imagesTr":
                raise ValueError(
                    f"MSD training image {image_folder / name} has no label file "
                    f"{label_folder / name}; restore it or move the image to imagesTs"
                )
            image = image_folder / name
            cases.append(
                CaseFiles(
                    case_id=case_id,
                    layout="msd",
                    images={m: image for m in MODALITIES},
                    seg=seg,
                    grade=None,
                    label_convention=MSD,
                )
            )
    return cases


def _msd_label(label_folder: Path, case_id: str) -> Path | None:
    found = [label_folder / (case_id + ext) for ext in (".nii.gz", ".nii")]
    found = [p for p in found if p.is_file()]
    if len(found) > 1:
        raise ValueError(f"two label files for MSD case {case_id}: {found}; keep one")
    return found[0] if found else None


# --- label maps alone (evaluation references) ----------------------------------------------


@dataclass(frozen=True)
class LabelFile:
    """A reference label map found by :func:`discover_label_maps`.

    Attributes:
        case_id: the case ID.
        path: the NIfTI label map.
        label_convention: how it encodes the sub-regions when its layout says so (BraTS
            2019 for a case folder with 2017-2021 image names, BraTS 2023 with 2023+
            names, MSD in an MSD/nnU-Net ``labelsTr``/``labelsTs`` folder), else None:
            inferred from the values ({0, 1, 2, 4}: BraTS 2017-2021; a 3 and no 4:
            BraTS 2023+; ``evaluation.read_label_map``).
    """

    case_id: str
    path: Path
    label_convention: LabelConvention | None


#: Folders of label files in the MSD convention (MSD Task01; nnU-Net's BraTS datasets
#: use the same order: 1 edema, 2 non-enhancing tumor, 3 enhancing tumor).
_MSD_LABEL_DIRS = ("labelsTr", "labelsTs")
_MSD_IMAGE_DIRS = ("imagesTr", "imagesTs")


def discover_label_maps(root: str | Path) -> dict[str, LabelFile]:
    """Find the label maps under ``root`` by case ID, without needing any image.

    Layouts read (mixed freely, :data:`_MAX_DEPTH` folder levels deep):

    - case folders, with or without their images: ``<ID>/<ID>_seg.nii.gz`` (BraTS
      2017-2021, also ``HGG``/``LGG`` sub-folders), ``<ID>/<ID>-seg.nii.gz`` (BraTS
      2023+); a case folder without a modality still gives its label map;
    - flat folders of label files: ``<ID>_seg.nii.gz`` / ``<ID>-seg.nii.gz``, or
      ``<ID>.nii.gz`` (the online system's and nnU-Net's ``gt_segmentations`` naming)
      in a folder holding no case image files; when some of those ``<ID>`` are BraTS
      or MSD case IDs (``BraTS2021_00000``, ``BraTS-GLI-00000-000``, ``BRATS_001``...),
      the other files (a template, an atlas) are not cases;
    - MSD task folders: ``labelsTr/<ID>.nii.gz`` and ``labelsTs/<ID>.nii.gz`` (the
      4-D images of ``imagesTr``/``imagesTs`` are not read), also a ``labelsTr``
      folder given alone.

    ``.nii`` and ``.nii.gz`` alike; hidden files and folders are ignored, and so is any
    other NIfTI file that these names do not make a label map, with one warning listing
    them.

    Args:
        root: a folder (or a single case folder).

    Returns:
        case ID -> :class:`LabelFile`, sorted by case ID.

    Raises:
        FileNotFoundError: if ``root`` does not exist or is a file.
        ValueError: if one case ID has two label files (names both), no label map is
            found (names ``root`` and the layouts read), or ``root`` is an MSD/nnU-Net
            ``imagesTr``/``imagesTs`` folder (names the ``labelsTr`` folder to pass).

    Source: docs/design.md section 1 (layouts); the BraTS online system's and nnU-Net's
    label-file naming.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"reference folder {root} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is a file; pass the folder holding the reference label maps"
        )
    if root.name in _MSD_IMAGE_DIRS:
        labels_dir = root.parent / root.name.replace("images", "labels")
        beside = "beside it" if labels_dir.is_dir() else "(not found beside it)"
        raise ValueError(
            f"reference folder {root} looks like an MSD/nnU-Net {root.name} folder: it holds "
            f"images, not label maps; pass the {labels_dir.name} folder {beside}: "
            f"{labels_dir}, or the task folder {root.parent}"
        )
    found: dict[str, LabelFile] = {}
    ignored: list[Path] = []
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        folder = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d not in _MSD_IMAGE_DIRS
        )
        if len(folder.parts) - base_depth >= _MAX_DEPTH:
            dirnames[:] = []
        names = sorted(f for f in filenames if _is_nifti(f))
        labels, not_labels = _folder_label_maps(folder, names)
        ignored.extend(folder / n for n in not_labels)
        for label in labels:
            if label.case_id in found:
                raise ValueError(
                    f"case {label.case_id} has two reference label maps: "
                    f"{found[label.case_id].path} and {label.path}; keep one"
                )
            found[label.case_id] = label
    if not found:
        raise ValueError(
            f"reference folder {root} holds no label map: expected case folders with "
            "<ID>_seg.nii.gz (or <ID>-seg.nii.gz), a flat folder of <ID>_seg.nii.gz or "
            "<ID>.nii.gz label files, or an MSD task folder with labelsTr/; point REF_DIR "
            "at a cohort with ground-truth segmentations"
        )
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:10])
        more = f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
        logger.warning(
            "ignored %s under %s that the reference naming does not make a label map "
            "(<ID>_seg.nii.gz, <ID>-seg.nii.gz, case images, or <ID>.nii.gz named by BraTS "
            "case IDs): %s%s",
            plural(len(ignored), "NIfTI file"),
            root,
            shown,
            more,
        )
    logger.info("found %s under %s", plural(len(found), "reference label map"), root)
    return dict(sorted(found.items()))


def _folder_label_maps(folder: Path, names: list[str]) -> tuple[list[LabelFile], list[str]]:
    """The label maps lying directly in ``folder`` (see :func:`discover_label_maps`).

    Returns:
        The label maps, and the names of the folder's other NIfTI files that are not case
        images (ignored).
    """
    if folder.name in _MSD_LABEL_DIRS:
        return [LabelFile(_NIFTI_RE.sub("", n), folder / n, MSD) for n in names], []
    groups, unmatched = _group_case_files(names)
    _check_supported(folder, groups, names)
    if not groups:
        # a flat folder of <ID>.nii.gz label files; named by BraTS IDs, other names are strays
        brats_named = [n for n in unmatched if _BRATS_ID_RE.match(n)]
        strays = [n for n in unmatched if n not in brats_named] if brats_named else []
        cases = brats_named or unmatched
        return [LabelFile(_NIFTI_RE.sub("", n), folder / n, None) for n in cases], strays
    labels = []
    used: set[str] = set()
    for case_id, by_suffix in sorted(groups.items()):
        seg_names = by_suffix.pop("seg", [])
        if not seg_names and by_suffix and len(groups) == 1:
            # BraTS 2020 case 355 ships its label map as W39_1998.09.19_Segm.nii
            seg_like = [n for n in unmatched if "seg" in n.lower()]
            seg_names = seg_like if len(seg_like) == 1 else []
            used.update(seg_names)
        if len(seg_names) > 1:
            raise ValueError(
                f"folder {folder} holds {len(seg_names)} segmentation files for case "
                f"{case_id}: {sorted(seg_names)}; keep exactly one"
            )
        if not seg_names:
            continue
        if any(s in BRATS2023_SUFFIXES for s in by_suffix):
            convention: LabelConvention | None = BRATS_2023
        elif by_suffix:
            convention = BRATS_2019
        else:  # a label file alone: no image names to tell the release by
            convention = None
        labels.append(LabelFile(case_id, folder / seg_names[0], convention))
    return labels, [n for n in unmatched if n not in used]


def _check_supported(folder: Path, groups: dict, names: list[str]) -> None:
    """Refuse a folder of a BraTS task brats-mtl does not handle (MEN-RT, inpainting)."""
    from brats_mtl.tasks import check_supported_case

    for case_id in (folder.name, *groups):
        try:
            check_supported_case(case_id, names)
        except ValueError as error:
            raise ValueError(f"{folder}: {error}") from None


def _missing_modality_note(by_suffix: dict[str, list[str]]) -> str:
    """A 2023+ case with three modalities may be a BraSyn case: say it is not supported."""
    from brats_mtl.tasks import UNSUPPORTED_TASKS

    if any(s in BRATS2023_SUFFIXES for s in by_suffix):
        return f" ({UNSUPPORTED_TASKS['BraSyn']})"
    return ""
