"""The label-scheme registry: regions of every scheme, scheme inference, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from brats_mtl.conventions import BRATS_2019, BRATS_2023, MSD
from brats_mtl.tasks import (
    BRATS2017,
    BRATS2023,
    GLI_POST,
    LABEL_SCHEMES,
    MSD_TASK01,
    PED2024,
    check_scheme_for_case,
    check_supported_case,
    check_values,
    get_label_scheme,
    infer_label_scheme,
    lesionwise_parameters,
)


@pytest.mark.parametrize(
    ("scheme", "regions"),
    [
        (BRATS2017, {"ET": {4}, "WT": {1, 2, 4}, "TC": {1, 4}}),
        (MSD_TASK01, {"ET": {3}, "WT": {1, 2, 3}, "TC": {2, 3}}),
        (BRATS2023, {"ET": {3}, "WT": {1, 2, 3}, "TC": {1, 3}}),
        (
            GLI_POST,
            {"ET": {3}, "WT": {1, 2, 3}, "TC": {1, 3}, "NETC": {1}, "SNFH": {2}, "RC": {4}},
        ),
        (
            PED2024,
            {"ET": {1}, "WT": {1, 2, 3, 4}, "TC": {1, 2, 3}, "NET": {2}, "CC": {3}, "ED": {4}},
        ),
    ],
)
def test_regions_of_every_scheme(scheme, regions):
    assert {r: set(v) for r, v in scheme.regions.items()} == regions
    assert scheme.region_names[:3] == ("ET", "WT", "TC")  # the online systems' order
    labels = np.array(scheme.values)
    for region, values in regions.items():
        assert set(labels[scheme.region_mask(labels, region)].tolist()) == values


def test_rc_is_never_tumour():
    assert all(4 not in GLI_POST.regions[r] for r in ("ET", "TC", "WT"))


def test_three_region_schemes_match_their_conventions():
    for scheme in (BRATS2017, MSD_TASK01, BRATS2023):
        internal = scheme.convention.to_internal(np.array(scheme.values))
        assert sorted(internal.tolist()) == [0, 1, 2, 4]
        for region, values in scheme.regions.items():
            mapped = set(scheme.convention.to_internal(np.array(values)).tolist())
            assert mapped == {"ET": {4}, "WT": {1, 2, 4}, "TC": {1, 4}}[region]


def test_get_label_scheme():
    assert get_label_scheme("gli-post") is GLI_POST
    assert get_label_scheme("brats2019") is BRATS2017  # the convention's name
    with pytest.raises(ValueError, match="MEN-RT"):
        get_label_scheme("men-rt")


@pytest.mark.parametrize(
    ("case_id", "layout", "values", "want"),
    [
        ("BraTS2021_00000", BRATS_2019, {0, 1, 2, 4}, BRATS2017),
        ("BraTS19_CBICA_AAB_1", None, {0, 1, 2, 4}, BRATS2017),
        ("BRATS_001", MSD, {0, 1, 2, 3}, MSD_TASK01),
        ("BraTS-GLI-00000-000", BRATS_2023, {0, 1, 2, 3}, BRATS2023),
        ("BraTS-GLI-00000-000", BRATS_2023, {0, 1, 2, 3, 4}, GLI_POST),  # RC: post-treatment
        ("BraTS-GLI-02000-100", BRATS_2023, {0, 1, 2}, GLI_POST),  # later timepoint
        ("BraTS-GLI-00000-000", None, {0, 2, 4}, GLI_POST),  # flat file, 2023 name
        ("BraTS-MET-00001-000", None, {0, 1, 2, 3}, BRATS2023),
        ("BraTS-MET-00001-000", None, {0, 3, 4}, GLI_POST),  # MET 2025+
        ("BraTS-PED-00001-000", None, {0, 1, 2, 3}, BRATS2023),  # PED 2023
        ("BraTS-PED-00001-000", None, {0, 1, 4}, PED2024),
        ("BraTS-SSA-00001-000", None, {0, 1, 2, 3}, BRATS2023),
        ("case1", None, {0, 1, 2, 4}, BRATS2017),
        ("case1", None, {0, 1, 3}, BRATS2023),
    ],
)
def test_infer_label_scheme(case_id, layout, values, want):
    assert infer_label_scheme(case_id, layout, values) is want


def test_infer_label_scheme_refusals():
    with pytest.raises(ValueError, match="pass --labels"):
        infer_label_scheme("case1", None, {0, 3, 4})
    with pytest.raises(ValueError, match="MEN-RT.*not supported"):
        infer_label_scheme("BraTS-MEN-RT-0000-1", None, {0, 1})


def test_values_outside_the_scheme_name_file_values_and_scheme():
    check_values(GLI_POST, [0, 1, 2, 3, 4], "x.nii.gz", "reference")  # fits
    with pytest.raises(ValueError) as error:
        check_values(BRATS2023, [0, 1, 2, 4], "ref/a.nii.gz", "reference")
    message = str(error.value)
    assert "ref/a.nii.gz" in message and "[4]" in message and "brats2023" in message
    assert "BraTS 2017-2021" in message and "--labels brats2017" in message
    with pytest.raises(ValueError, match="label 3 is ET from BraTS 2023"):
        check_values(BRATS2017, [0, 1, 3], "p.nii.gz", "prediction")
    with pytest.raises(ValueError, match="schemes that hold these values: none"):
        check_values(PED2024, [0, 7], "p.nii.gz", "prediction")


def test_a_scheme_of_the_other_era_is_refused():
    # a 2021 file holds ET as 4: gli-post would read it as RC without any value out of range
    with pytest.raises(ValueError, match="BraTS 2017-2021 case.*refusing"):
        check_scheme_for_case(GLI_POST, "BraTS2021_00000", "seg.nii.gz")
    with pytest.raises(ValueError, match="BraTS 2023\\+ case.*refusing"):
        check_scheme_for_case(BRATS2017, "BraTS-GLI-00000-000", "seg.nii.gz")
    check_scheme_for_case(BRATS2017, "BraTS2021_00000", "seg.nii.gz")
    check_scheme_for_case(PED2024, "BraTS-PED-00001-000", "seg.nii.gz")
    check_scheme_for_case(GLI_POST, "case1", "seg.nii.gz")  # a plain name says nothing


def test_unsupported_tasks():
    with pytest.raises(ValueError, match="MEN-RT"):
        check_supported_case("BraTS-MEN-RT-0000-1")
    with pytest.raises(ValueError, match="inpainting"):
        check_supported_case("BraTS-GLI-00000-000", ["BraTS-GLI-00000-000-t1n-voided.nii.gz"])
    check_supported_case("BraTS-GLI-00000-000", ["BraTS-GLI-00000-000-t1n.nii.gz"])


def test_lesionwise_parameters_by_task():
    assert lesionwise_parameters("BraTS-MET-00001-000").dilation_iterations == 1
    assert lesionwise_parameters("BraTS-MET-00001-000").volume_threshold_mm3 == 2.0
    assert lesionwise_parameters("BraTS-MEN-00001-000").dilation_iterations == 1
    assert lesionwise_parameters("BraTS2021_00000").task == "GLI"
    assert lesionwise_parameters("anything", "met").task == "MET"
    with pytest.raises(ValueError, match="unknown BraTS task"):
        lesionwise_parameters("x", "XYZ")
    assert set(LABEL_SCHEMES) == {"brats2017", "msd", "brats2023", "gli-post", "ped2024"}
