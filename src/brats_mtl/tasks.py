"""BraTS tasks as data: label schemes, evaluation regions and lesion-wise parameters.

Every BraTS task writes its reference label maps in one *label scheme*: the values in the
files, what each value means, and the regions scored. A scheme is picked per case from the
folder layout, the case ID and the values present (:func:`infer_label_scheme`); an
explicit choice (``--labels NAME``) overrides it. Lesion-wise scoring (BraTS 2023-2025)
also needs the *task* (GLI, SSA, MEN, MET, PED, GoAT): its dilation and lesion-volume
threshold differ by task (:data:`LESIONWISE_PARAMETERS`).

==========  ========================================  =====================================
scheme      datasets                                  values in the files
==========  ========================================  =====================================
brats2017   BraTS 2017-2021 glioma                    1 NCR/NET, 2 ED, 4 ET
msd         MSD Task01_BrainTumour                    1 edema, 2 non-enhancing, 3 enhancing
brats2023   2023+ pre-treatment GLI, SSA, MEN, GoAT,  1 NETC, 2 SNFH, 3 ET
            MET 2023, PED 2023
gli-post    2024+ post-treatment glioma, MET 2025+    1 NETC, 2 SNFH, 3 ET, 4 RC
ped2024     pediatric tumours 2024+                   1 ET, 2 NET, 3 CC, 4 ED
==========  ========================================  =====================================

Sources: BraTS 2017-2021 data descriptions (Menze et al. 2015, Bakas et al. 2017, Baid et
al. 2021); the BraTS 2023-2025 task descriptions (label tables of the GLI post-treatment,
MET and PED releases); the MSD Task01 ``dataset.json``; lesion-wise parameters from
``get_challenge_parameters`` of the BraTS 2023 lesion-wise metrics code (public
``rachitsaluja/BraTS-2023-Metrics``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from brats_mtl.conventions import BRATS_2019, BRATS_2023, MSD, LabelConvention


@dataclass(frozen=True)
class LabelScheme:
    """The label values of one family of BraTS releases and the regions scored on them.

    Attributes:
        name: registry key, e.g. ``"gli-post"``.
        release: the releases that use it, for messages (``"BraTS 2017-2021"``).
        labels: file value -> sub-region name (background 0 excluded), in value order.
        regions: region name -> file values it unites, in the order of the result columns
            (ET, WT, TC first, as the online systems; then single-label regions).
        convention: the three-region ``LabelConvention`` that maps the scheme to the
            internal {0, 1, 2, 4} labels the network uses; None for schemes with more than
            three tumour labels (their extra labels have no internal class).
        era: ``"2017-2021"`` (ET = 4), ``"2023+"`` or ``"msd"``; a case named in one era's
            style is refused with a scheme of another (see :func:`check_scheme_for_case`).
    """

    name: str
    release: str
    labels: Mapping[int, str]
    regions: Mapping[str, tuple[int, ...]]
    convention: LabelConvention | None
    era: str

    @property
    def values(self) -> tuple[int, ...]:
        """Every value a file in this scheme may hold, background 0 first."""
        return (0, *self.labels)

    @property
    def region_names(self) -> tuple[str, ...]:
        """Region names in column order."""
        return tuple(self.regions)

    def region_mask(self, labels: np.ndarray, region: str) -> np.ndarray:
        """Boolean mask of one region of a label map written in this scheme.

        Args:
            labels: integer array of any shape, values in ``self.values``.
            region: a key of ``self.regions``.

        Returns:
            bool array of the same shape.

        Raises:
            KeyError: if ``region`` is not a region of the scheme.
        """
        lut = np.zeros(256, dtype=bool)
        lut[list(self.regions[region])] = True
        return lut[np.asarray(labels).astype(np.intp, copy=False)]

    def describe(self) -> str:
        """``"gli-post (1 NETC, 2 SNFH, 3 ET, 4 RC)"``, for messages."""
        return f"{self.name} ({', '.join(f'{v} {n}' for v, n in self.labels.items())})"


BRATS2017 = LabelScheme(
    name="brats2017",
    release="BraTS 2017-2021",
    labels={1: "NCR/NET", 2: "ED", 4: "ET"},
    regions={"ET": (4,), "WT": (1, 2, 4), "TC": (1, 4)},
    convention=BRATS_2019,
    era="2017-2021",
)
MSD_TASK01 = LabelScheme(
    name="msd",
    release="MSD Task01",
    labels={1: "edema", 2: "non-enhancing", 3: "enhancing"},
    regions={"ET": (3,), "WT": (1, 2, 3), "TC": (2, 3)},
    convention=MSD,
    era="msd",
)
BRATS2023 = LabelScheme(
    name="brats2023",
    release="BraTS 2023+ (pre-treatment)",
    labels={1: "NETC", 2: "SNFH", 3: "ET"},
    regions={"ET": (3,), "WT": (1, 2, 3), "TC": (1, 3)},
    convention=BRATS_2023,
    era="2023+",
)
#: RC (resection cavity) is not tumour: it is scored alone, never inside TC or WT.
GLI_POST = LabelScheme(
    name="gli-post",
    release="BraTS 2024+ post-treatment glioma, MET 2025+",
    labels={1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"},
    regions={
        "ET": (3,),
        "WT": (1, 2, 3),
        "TC": (1, 3),
        "NETC": (1,),
        "SNFH": (2,),
        "RC": (4,),
    },
    convention=None,
    era="2023+",
)
#: Pediatric tumours from 2024 on: ET is label 1.
PED2024 = LabelScheme(
    name="ped2024",
    release="BraTS 2024+ pediatric tumours",
    labels={1: "ET", 2: "NET", 3: "CC", 4: "ED"},
    regions={
        "ET": (1,),
        "WT": (1, 2, 3, 4),
        "TC": (1, 2, 3),
        "NET": (2,),
        "CC": (3,),
        "ED": (4,),
    },
    convention=None,
    era="2023+",
)

#: Every label scheme by name.
LABEL_SCHEMES: dict[str, LabelScheme] = {
    s.name: s for s in (BRATS2017, MSD_TASK01, BRATS2023, GLI_POST, PED2024)
}
#: Scheme of each three-region label convention (``--ref-convention`` names).
SCHEME_OF_CONVENTION: dict[str, LabelScheme] = {
    s.convention.name: s for s in LABEL_SCHEMES.values() if s.convention is not None
}

#: Tasks and data that brats-mtl does not score, with the reason given to the user.
UNSUPPORTED_TASKS: dict[str, str] = {
    "MEN-RT": (
        "BraTS-MEN-RT (meningioma radiotherapy) is not supported: its reference is a single "
        "GTV label on T1c alone, at native resolution and not skull-stripped"
    ),
    "inpainting": (
        "the BraTS inpainting task (t1n-voided images and healthy/unhealthy masks) is not "
        "supported: it is scored on synthesised intensities, not on tumour labels"
    ),
    "BraSyn": (
        "the BraTS missing-modality task (BraSyn) is not supported: every case needs all "
        "four modalities"
    ),
}


@dataclass(frozen=True)
class LesionwiseParameters:
    """Lesion-wise parameters of one BraTS task.

    Attributes:
        task: ``"GLI"``, ``"SSA"``, ``"MEN"``, ``"MET"``, ``"PED"`` or ``"GoAT"``.
        dilation_iterations: iterations of the 3-D connectivity-2 structuring element that
            merge nearby reference lesions and define a lesion's neighbourhood.
        volume_threshold_mm3: reference lesions of at most this volume (mm^3; voxels at
            1 mm) are left out of the lesion-wise scores and counts.
    """

    task: str
    dilation_iterations: int
    volume_threshold_mm3: float


#: Per task, from ``get_challenge_parameters`` of the BraTS 2023 lesion-wise code. GoAT is
#: not in that table; it is scored with the glioma (GLI) parameters.
LESIONWISE_PARAMETERS: dict[str, LesionwiseParameters] = {
    p.task: p
    for p in (
        LesionwiseParameters("GLI", 3, 50.0),
        LesionwiseParameters("SSA", 3, 50.0),
        LesionwiseParameters("PED", 3, 50.0),
        LesionwiseParameters("MEN", 1, 50.0),
        LesionwiseParameters("MET", 1, 2.0),
        LesionwiseParameters("GoAT", 3, 50.0),
    )
}
#: HD95 in mm of a missed reference lesion or a false-positive component (BraTS 2023
#: lesion-wise code: infinite distances are replaced by 374).
LESIONWISE_HD95_PENALTY_MM: float = 374.0

# BraTS 2023+ IDs: BraTS-<TASK>-<5 digits>-<3-digit timepoint>; MEN-RT: BraTS-MEN-RT-....
_ID_2023_RE = re.compile(
    r"^BraTS-(?P<task>GLI|SSA|MEN-RT|MEN|MET|PED|GoAT)-(?P<patient>\d+)(?:-(?P<tp>\d+))?",
    re.IGNORECASE,
)
# BraTS 2017-2021 IDs: Brats17_..., Brats18_..., BraTS19_..., BraTS20_..., BraTS2021_...
_ID_LEGACY_RE = re.compile(r"^brats(?:1[789]|20|2021)_", re.IGNORECASE)
_TASK_NAMES = {t.upper(): t for t in (*LESIONWISE_PARAMETERS, "MEN-RT")}
# Inpainting files (BraTS 2023+ inpainting release).
_INPAINTING_RE = re.compile(r"-(?:t1n-voided|mask-healthy|mask-unhealthy)\.nii(?:\.gz)?$")


def get_label_scheme(scheme: LabelScheme | str) -> LabelScheme:
    """A ``LabelScheme`` from itself, its name, or a label convention's name.

    Raises:
        ValueError: on an unknown name (lists the known ones and the unsupported tasks).
    """
    if isinstance(scheme, LabelScheme):
        return scheme
    if scheme in LABEL_SCHEMES:
        return LABEL_SCHEMES[scheme]
    if scheme in SCHEME_OF_CONVENTION:
        return SCHEME_OF_CONVENTION[scheme]
    raise ValueError(
        f"unknown label scheme {scheme!r}; choose one of {', '.join(LABEL_SCHEMES)} "
        f"(not supported: {', '.join(UNSUPPORTED_TASKS)})"
    )


def task_of_case(case_id: str) -> str | None:
    """The BraTS task named by a 2023+ case ID (``"GLI"``, ``"MEN-RT"``, ...), else None."""
    match = _ID_2023_RE.match(case_id)
    return None if match is None else _TASK_NAMES[match["task"].upper()]


def case_id_era(case_id: str) -> str | None:
    """``"2017-2021"`` or ``"2023+"`` from the style of a case ID, None when it says neither."""
    if _ID_LEGACY_RE.match(case_id):
        return "2017-2021"
    if _ID_2023_RE.match(case_id):
        return "2023+"
    return None


def lesionwise_parameters(case_id: str, task: str | None = None) -> LesionwiseParameters:
    """The lesion-wise parameters of a case: ``task`` when given, else from its ID.

    2023+ IDs name their task; BraTS 2017-2021, MSD and other IDs are glioma (GLI).

    Raises:
        ValueError: on an unknown ``task``, or a MEN-RT case (not supported).
    """
    if task is not None:
        key = _TASK_NAMES.get(task.upper())
        if key is None or key not in LESIONWISE_PARAMETERS:
            raise ValueError(
                f"unknown BraTS task {task!r}; choose one of {', '.join(LESIONWISE_PARAMETERS)}"
            )
        return LESIONWISE_PARAMETERS[key]
    named = task_of_case(case_id)
    if named == "MEN-RT":
        raise ValueError(f"case {case_id}: {UNSUPPORTED_TASKS['MEN-RT']}")
    return LESIONWISE_PARAMETERS[named or "GLI"]


def check_supported_case(case_id: str, file_names: Iterable[str] = ()) -> None:
    """Refuse a case of a task brats-mtl does not score (MEN-RT, inpainting).

    Args:
        case_id: the case ID.
        file_names: names of the case's files, for the inpainting check.

    Raises:
        ValueError: naming the case and the reason (:data:`UNSUPPORTED_TASKS`).
    """
    if task_of_case(case_id) == "MEN-RT":
        raise ValueError(f"case {case_id}: {UNSUPPORTED_TASKS['MEN-RT']}")
    if any(_INPAINTING_RE.search(name) for name in file_names):
        raise ValueError(f"case {case_id}: {UNSUPPORTED_TASKS['inpainting']}")


def infer_label_scheme(
    case_id: str,
    layout_convention: LabelConvention | None,
    present: Iterable[int],
) -> LabelScheme:
    """The label scheme of a reference label map, from its layout, ID and values.

    Rules, in order:

    1. MEN-RT IDs are refused (not supported).
    2. An MSD layout is ``msd``; a BraTS 2017-2021 layout or ID is ``brats2017``.
    3. A 2023+ layout or ID: glioma (GLI) with a later timepoint (``-1xx``) or holding
       label 4 is ``gli-post``; a metastasis (MET) holding 4 is ``gli-post`` (MET 2025+);
       a pediatric case (PED) holding 4 is ``ped2024``; any other is ``brats2023``. A
       ped2024 file without label 4 (no edema) cannot be told from PED 2023 by its
       values: pass ``--labels ped2024``.
    4. Otherwise (a flat file with a plain name) by the values: a subset of {0, 1, 2, 4}
       is ``brats2017``, a 3 without 4 ``brats2023``; 3 and 4 together need ``--labels``.

    Args:
        case_id: the case ID.
        layout_convention: the convention the folder layout implies (discovery's
            ``LabelFile.label_convention``), or None.
        present: label values found in the file.

    Returns:
        The scheme. Its values are not checked here: see :func:`check_values`.

    Raises:
        ValueError: for a MEN-RT case, or values that name no scheme (names the case).

    Source: label tables of the BraTS 2017-2025 releases (module docstring).
    """
    values = set(int(v) for v in present)
    task = task_of_case(case_id)
    if task == "MEN-RT":
        raise ValueError(f"case {case_id}: {UNSUPPORTED_TASKS['MEN-RT']}")
    if layout_convention is MSD:
        return MSD_TASK01
    if layout_convention is BRATS_2019 or case_id_era(case_id) == "2017-2021":
        return BRATS2017
    if layout_convention is BRATS_2023 or task is not None:
        match = _ID_2023_RE.match(case_id)
        timepoint = int(match["tp"]) if match is not None and match["tp"] else 0
        if task == "GLI" and (timepoint >= 100 or 4 in values):
            return GLI_POST
        if task == "MET" and 4 in values:
            return GLI_POST
        if task == "PED" and 4 in values:
            return PED2024
        return BRATS2023
    if values <= set(BRATS2017.values):
        return BRATS2017
    if values <= set(BRATS2023.values):
        return BRATS2023
    raise ValueError(
        f"case {case_id}: label values {sorted(values)} name no label scheme by themselves "
        f"(3 and 4 together: gli-post or ped2024); pass --labels with one of "
        f"{', '.join(LABEL_SCHEMES)}"
    )


def check_values(scheme: LabelScheme, present: Iterable[int], path: object, role: str) -> None:
    """Refuse a label map holding values outside its scheme.

    Args:
        scheme: the scheme the file is read in.
        present: label values found in the file.
        path: the file, for the message.
        role: ``"reference"`` or ``"prediction"``.

    Raises:
        ValueError: naming the file, the values found, the scheme and, when the values
            look like another era's labels (ET = 4 of 2017-2021 read with a 2023+ scheme,
            or the reverse), that explanation.
    """
    values = sorted(set(int(v) for v in present))
    bad = [v for v in values if v not in scheme.values]
    if not bad:
        return
    message = (
        f"{role} {path} holds label values {bad} outside the {scheme.describe()} scheme "
        f"(values found: {values})"
    )
    if scheme.era == "2023+" and set(values) <= set(BRATS2017.values):
        message += (
            "; its values are the BraTS 2017-2021 set (ET = 4): score it with --labels "
            "brats2017, never with a 2023+ scheme"
        )
    elif scheme.era == "2017-2021" and 3 in values:
        message += (
            "; label 3 is ET from BraTS 2023 on: score a 2023+ file with --labels brats2023 "
            "(or gli-post / ped2024), never with brats2017"
        )
    else:
        fits = [s.name for s in LABEL_SCHEMES.values() if set(values) <= set(s.values)]
        message += f"; schemes that hold these values: {', '.join(fits) or 'none'}"
    raise ValueError(message)


def check_scheme_for_case(scheme: LabelScheme, case_id: str, path: object) -> None:
    """Refuse a scheme of another era than the case ID's (2017-2021 against 2023+).

    A BraTS 2017-2021 file (``BraTS2021_00000``) holds ET as 4, which a 2023+ scheme reads
    as RC (gli-post) or ED (ped2024); a 2023+ file read as brats2017 loses ET. Either way
    the scores would be wrong without any value being out of range.

    Raises:
        ValueError: naming the file, the case and both eras.
    """
    era = case_id_era(case_id)
    if era is None or scheme.era == "msd" or era == scheme.era:
        return
    raise ValueError(
        f"{path}: case {case_id} is named as a BraTS {era} case, but the {scheme.name} "
        f"scheme is for {scheme.release} label maps; refusing to score it (ET is label "
        f"{4 if era == '2017-2021' else 3} in {era} files). Pass the --labels of its release "
        f"({'brats2017' if era == '2017-2021' else 'brats2023, gli-post or ped2024'})"
    )


# --- training and prediction on a scheme ------------------------------------------------


@dataclass(frozen=True)
class NetworkClasses:
    """The classes a network trained on one label scheme predicts, in internal labels.

    Schemes with three tumour labels (``brats2017``, ``msd``, ``brats2023``) are read into
    the internal {0, 1, 2, 4} labels of the paper (NCR/NET, ED, ET; ``LabelConvention``)
    and share its four classes, so the paper's network on the paper's data is unchanged
    and a run trained on one of them predicts any other. Schemes with four tumour labels
    (``gli-post``, ``ped2024``) keep their file values as internal labels: class ``k``
    is file value ``k``, background first.

    The paper's method carries over label by label:

    - the ET classifier's target is "the patch holds the scheme's ET" (``et_label``);
    - ET suppression relabels ET to the scheme's non-enhancing core (``core_label``:
      NCR/NET for brats2017, NETC for brats2023/gli-post, NET for ped2024), a label of
      TC and WT alike, so neither region changes;
    - the resection cavity (RC, gli-post) is a class of its own, in no tumour region, and
      suppression never touches it.

    Attributes:
        scheme: the label scheme.
        labels: internal label value of each network class, background first.
        names: sub-region name of each class (``"background"`` first).
        et_label: internal label of ET.
        core_label: internal label ET is relabelled to by ET suppression.
        regions: region name -> internal labels, in the scheme's column order.
    """

    scheme: LabelScheme
    labels: tuple[int, ...]
    names: tuple[str, ...]
    et_label: int
    core_label: int
    regions: Mapping[str, tuple[int, ...]]

    @property
    def n_classes(self) -> int:
        """Number of network output classes (``model.n_classes``)."""
        return len(self.labels)

    @property
    def et_class(self) -> int:
        """Index of the ET class."""
        return self.labels.index(self.et_label)

    @property
    def key(self) -> str:
        """Schemes of one key share their classes: ``"internal"`` or the scheme name."""
        return "internal" if self.scheme.convention is not None else self.scheme.name

    def to_classes(self, labels: np.ndarray) -> np.ndarray:
        """Internal labels -> class indices 0..n_classes-1 (int64, same shape).

        Raises:
            ValueError: if ``labels`` holds a value that is no class.
        """
        lut = np.full(256, -1, dtype=np.int64)
        lut[list(self.labels)] = np.arange(len(self.labels))
        classes = lut[np.asarray(labels).astype(np.intp, copy=False)]
        if (classes < 0).any():
            raise ValueError(
                f"labels must be in {self.labels} ({self.scheme.name}), found "
                f"{np.unique(labels).tolist()}"
            )
        return classes

    def to_labels(self, classes: np.ndarray) -> np.ndarray:
        """Class indices -> internal labels (uint8, same shape)."""
        return np.asarray(self.labels, dtype=np.uint8)[np.asarray(classes)]


def network_classes(scheme: LabelScheme | str | None = None) -> NetworkClasses:
    """The network classes of a label scheme (None: the paper's, ``brats2017``).

    Raises:
        ValueError: on an unknown scheme name.

    Source: the label tables of the BraTS releases (module docstring); for the three-label
    schemes, the internal labels of the paper (BraTS 2017-2021: 1 NCR/NET, 2 ED, 4 ET).
    """
    scheme = BRATS2017 if scheme is None else get_label_scheme(scheme)
    if scheme.convention is not None:
        return NetworkClasses(
            scheme=scheme,
            labels=(0, 1, 2, 4),
            names=("background", "NCR/NET", "ED", "ET"),
            et_label=4,
            core_label=1,
            regions={"ET": (4,), "WT": (1, 2, 4), "TC": (1, 4)},
        )
    core = {"gli-post": "NETC", "ped2024": "NET"}[scheme.name]
    by_name = {name: value for value, name in scheme.labels.items()}
    return NetworkClasses(
        scheme=scheme,
        labels=scheme.values,
        names=("background", *scheme.labels.values()),
        et_label=scheme.regions["ET"][0],
        core_label=by_name[core],
        regions=dict(scheme.regions),
    )


def check_run_scheme(
    run_scheme: LabelScheme | str, data_scheme: LabelScheme | str, where: object
) -> None:
    """Refuse data of a scheme whose classes differ from those a run was trained on.

    ``brats2017``, ``msd`` and ``brats2023`` share the paper's four classes (see
    :class:`NetworkClasses`) and predict one another; every other pair is refused.

    Raises:
        ValueError: naming both schemes and ``where`` (the run folder).
    """
    run, data = network_classes(run_scheme), network_classes(data_scheme)
    if run.key != data.key:
        raise ValueError(
            f"the run {where} was trained on the {run.scheme.describe()} label scheme, but "
            f"the data is in the {data.scheme.describe()} scheme; predict it with a run "
            f"trained on {data.scheme.name} data (or pass --labels if the data's scheme "
            "was inferred wrongly)"
        )


def patient_id(case_id: str) -> str:
    """The patient of a case: a 2023+ ID without its timepoint, else the case ID itself.

    ``BraTS-GLI-00000-000`` and ``BraTS-GLI-00000-100`` are two scans of patient
    ``BraTS-GLI-00000`` (BraTS 2023+ naming: ``BraTS-<TASK>-<patient>-<timepoint>``).
    """
    match = _ID_2023_RE.match(case_id)
    if match is None or not match["tp"]:
        return case_id
    return case_id[: match.end("patient")]


def pick_training_scheme(
    schemes: Mapping[str, LabelScheme], explicit: LabelScheme | str | None = None
) -> LabelScheme:
    """The one scheme of a training set's labeled cases.

    Args:
        schemes: case ID -> scheme inferred from its label map (unlabeled cases are left
            out: they join any scheme).
        explicit: ``--labels``; every case is then read in it.

    Returns:
        ``explicit`` when given, else the schemes' common one (``brats2017`` when no case
        is labeled). Schemes sharing the paper's four classes (brats2017, msd,
        brats2023) mix: each case is read in its own and the first by name is returned.

    Raises:
        ValueError: if the cases' schemes disagree; lists the cases of each scheme.
    """
    if explicit is not None:
        return get_label_scheme(explicit)
    if not schemes:
        return BRATS2017
    by_key: dict[str, dict[str, list[str]]] = {}
    for case_id, scheme in sorted(schemes.items()):
        key = network_classes(scheme).key
        by_key.setdefault(key, {}).setdefault(scheme.name, []).append(case_id)
    if len(by_key) > 1:
        lines = []
        for names in by_key.values():
            for name, cases in names.items():
                shown = ", ".join(cases[:20]) + (" ..." if len(cases) > 20 else "")
                lines.append(f"  {name} ({len(cases)} cases): {shown}")
        raise ValueError(
            "the training cases disagree on the label scheme:\n" + "\n".join(lines) + "\n"
            "split the folder by scheme, or pass --labels NAME to read every case in one "
            f"scheme ({', '.join(LABEL_SCHEMES)})"
        )
    (names,) = by_key.values()
    return LABEL_SCHEMES[min(names)]
