import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from brats_mtl.figures.common import save_figure
from brats_mtl.figures.slices import (
    LABEL_COLOURS,
    AxialView,
    overlay_rgba,
    preprocessing_figure,
    segmentation_figure,
    tumor_slice_index,
)


def test_tumor_slice_index_and_overlay():
    labels = np.zeros((8, 8, 6), np.uint8)
    labels[2:4, 2:4, 1] = 2
    labels[1:7, 1:7, 4] = 1
    assert tumor_slice_index(labels) == 4
    assert tumor_slice_index(np.zeros((4, 4, 6), np.uint8)) == 3
    rgba = overlay_rgba(np.array([[0, 1], [2, 4]], np.uint8))
    assert rgba[0, 0, 3] == 0
    assert tuple(rgba[0, 1]) == pytest.approx(LABEL_COLOURS[1])
    assert tuple(rgba[1, 0]) == pytest.approx(LABEL_COLOURS[2])
    assert tuple(rgba[1, 1]) == pytest.approx(LABEL_COLOURS[4])


def test_figures_render_and_save(tmp_path):
    rng = np.random.default_rng(0)
    raw = np.zeros((20, 22, 18), np.float32)
    raw[4:16, 5:17, 3:15] = rng.random((12, 12, 12)) + 1
    box = (slice(4, 16), slice(5, 17), slice(3, 15))
    norm = raw[box] - raw[box].mean()
    patch = (slice(0, 16), slice(0, 16), slice(0, 16))
    fig = preprocessing_figure(raw, box, norm, patch, affine=np.eye(4))
    assert len(fig.axes) == 4
    assert fig.axes[3].images[0].get_array().shape == (16, 16)
    ref = np.zeros(raw.shape, np.uint8)
    ref[8:12, 8:12, 6:9] = 4
    fig2 = segmentation_figure(raw, ref, ref, title="x", affine=np.eye(4))
    assert [a.get_title() for a in fig2.axes] == ["ground truth (slice 6)", "prediction (slice 6)"]
    out = save_figure(fig2, tmp_path / "f.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError):
        save_figure(segmentation_figure(raw, ref, ref, affine=np.eye(4)), out)
    with pytest.raises(ValueError, match="same shape"):
        segmentation_figure(raw, ref[:-1], ref, affine=np.eye(4))


# --- orientation: every slice in radiological convention, read from the affine ----------

# A phantom in RAS voxel order (axis 0 runs to the patient's right, 1 to anterior, 2 to
# superior), with a distinct length per axis so that a transpose cannot pass unnoticed.
SHAPE_RAS = (14, 18, 10)
ANTERIOR, LEFT = 3.0, 5.0


def _phantom_ras() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, labels, affine): a head with an anterior and a patient-left marker, and a
    tumor whose largest slice is the only largest one."""
    image = np.zeros(SHAPE_RAS, np.float32)
    image[2:12, 2:16, 1:9] = 1.0 + np.arange(8, dtype=np.float32) / 100  # slices differ
    image[6:8, 13:16, 1:9] = ANTERIOR  # front of the head: high y in RAS
    image[2:4, 8:10, 1:9] = LEFT  # patient's left: low x in RAS
    labels = np.zeros(SHAPE_RAS, np.uint8)
    labels[5:9, 5:9, 3:7] = 2
    labels[6:8, 6:8, 5] = 4  # slice 5 holds 16 tumor voxels, slices 3, 4, 6 hold 16 too...
    labels[4, 5:9, 5] = 2  # ...so one more row makes slice 5 the only largest
    affine = np.diag([1.0, 1.0, 2.5, 1.0])  # 2.5 mm slices: an anisotropic grid
    affine[:3, 3] = (-7.0, -9.0, 4.0)
    return image, labels, affine


def _reoriented(volume: np.ndarray, affine: np.ndarray, axcodes: tuple[str, str, str]):
    """The same scan stored in another voxel order: (data, affine), through nibabel."""
    img = nib.Nifti1Image(volume, affine)
    img = img.as_reoriented(ornt_transform(io_orientation(affine), axcodes2ornt(axcodes)))
    assert nib.aff2axcodes(img.affine) == axcodes
    return np.asarray(img.dataobj), img.affine


def _box_in(box, shape, affine, axcodes):
    """``box`` (slices into a volume of ``shape`` with ``affine``) in ``axcodes`` order."""
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(axcodes)).astype(int)
    out = [None, None, None]
    for axis, (to, flip) in enumerate(transform):
        s, n = box[axis], shape[axis]
        out[to] = slice(s.start, s.stop) if flip == 1 else slice(n - s.stop, n - s.start)
    return tuple(out)


VOXEL_ORDERS = [
    ("L", "P", "S"),  # BraTS files
    ("R", "A", "S"),  # nibabel.as_closest_canonical
    ("A", "S", "L"),  # axes permuted, as a sagittal acquisition
    ("P", "R", "I"),  # axial axis flipped
    ("I", "P", "R"),  # both
]
#: Voxel orders the figures are drawn in and compared with the BraTS order (LPS).
FIGURE_ORDERS = [("R", "A", "S"), ("I", "P", "R")]


def _imshow_arrays(fig) -> list[np.ndarray]:
    return [np.asarray(im.get_array()) for ax in fig.axes for im in ax.images]


def _canvas(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def test_axial_view_is_radiological_on_a_known_phantom():
    image, _, affine = _phantom_ras()
    view = AxialView.from_affine(affine)
    assert view.axis == 2
    assert view.aspect == pytest.approx(1.0)  # in-plane spacing 1 x 1 mm
    shown = view.slice(image, 4)
    assert shown.shape == (18, 14)  # rows along A-P (y), columns along R-L (x)
    rows, _ = np.nonzero(shown == ANTERIOR)
    assert rows.max() < 18 // 2  # anterior marker in the upper half
    _, cols = np.nonzero(shown == LEFT)
    assert cols.min() >= 14 // 2  # patient-left marker on the image's right
    # analytic: row r shows y = 17 - r (anterior first), column c shows x = 13 - c (patient
    # right first, and right is +x in RAS)
    assert np.array_equal(shown, image[::-1, ::-1, 4].T)


@pytest.mark.parametrize("axcodes", VOXEL_ORDERS, ids="".join)
def test_axial_view_same_slice_for_every_voxel_order(axcodes):
    image, _, affine = _phantom_ras()
    expected = AxialView.from_affine(affine).slice(image, 4)
    data, moved_affine = _reoriented(image, affine, axcodes)
    view = AxialView.from_affine(moved_affine)
    assert view.axis == next(i for i, code in enumerate(axcodes) if code in "SI")
    assert view.aspect == pytest.approx(1.0)
    index = view.display_index(4, data.shape[view.axis])
    assert np.array_equal(view.slice(data, index), expected)


def test_axial_view_aspect_follows_spacing():
    # voxel axes (R, S, A) with 0.5 mm along R and 2 mm along A: rows (A-P) 2 mm apart,
    # columns (R-L) 0.5 mm apart
    affine = np.array([[0.5, 0, 0, 0], [0, 0, 2.0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]])
    view = AxialView.from_affine(affine)
    assert view.axis == 1
    assert view.aspect == pytest.approx(4.0)


@pytest.mark.parametrize(
    "affine, match",
    [(np.eye(3), "4x4"), (np.full((4, 4), np.nan), "finite"), (np.diag([1, 0, 1, 1]), "singular")],
)
def test_axial_view_rejects_bad_affines(affine, match):
    with pytest.raises(ValueError, match=match):
        AxialView.from_affine(affine)
    with pytest.raises(ValueError, match=match):
        segmentation_figure(
            np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), affine=affine
        )


def test_axial_view_index_out_of_range():
    with pytest.raises(IndexError, match="axial index 10"):
        AxialView.from_affine(np.eye(4)).slice(np.zeros((3, 3, 10)), 10)


@pytest.mark.parametrize("axcodes", FIGURE_ORDERS, ids="".join)
def test_segmentation_figure_same_picture_for_every_voxel_order(axcodes):
    image, labels, affine = _phantom_ras()
    lps_image, lps_affine = _reoriented(image, affine, ("L", "P", "S"))
    lps_labels, _ = _reoriented(labels, affine, ("L", "P", "S"))
    fig_lps = segmentation_figure(lps_image, lps_labels, lps_labels, affine=lps_affine)
    data, moved_affine = _reoriented(image, affine, axcodes)
    moved_labels, _ = _reoriented(labels, affine, axcodes)
    fig = segmentation_figure(data, moved_labels, moved_labels, affine=moved_affine)
    expected = _imshow_arrays(fig_lps)
    assert len(expected) == 4  # background and overlay, twice
    for got, want in zip(_imshow_arrays(fig), expected, strict=True):
        assert np.array_equal(got, want)
    # the tumor's largest slice (RAS z = 5) is the one shown
    assert np.array_equal(expected[1], overlay_rgba(labels[::-1, ::-1, 5].T))
    if axcodes[2] == "S":  # same slice number in the title: the whole picture is equal
        assert np.array_equal(_canvas(fig), _canvas(fig_lps))


@pytest.mark.parametrize("axcodes", [("I", "P", "R")], ids="".join)
def test_segmentation_figure_tied_tumor_slices_break_the_same_way(axcodes):
    image, _, affine = _phantom_ras()
    labels = np.zeros(SHAPE_RAS, np.uint8)
    labels[5:9, 5:9, 3] = 2
    labels[4:8, 6:10, 6] = 1  # as many tumor voxels as slice 3
    shown = []
    for codes in (("L", "P", "S"), axcodes):
        data, moved_affine = _reoriented(image, affine, codes)
        moved_labels, _ = _reoriented(labels, affine, codes)
        fig = segmentation_figure(data, moved_labels, moved_labels, affine=moved_affine)
        shown.append(_imshow_arrays(fig)[1])
    assert np.array_equal(shown[0], shown[1])
    assert np.array_equal(shown[0], overlay_rgba(labels[::-1, ::-1, 3].T))  # inferior first


@pytest.mark.parametrize("axcodes", FIGURE_ORDERS, ids="".join)
def test_preprocessing_figure_same_picture_for_every_voxel_order(axcodes):
    from brats_mtl.preprocessing import bounding_box, brain_mask

    image, _, affine = _phantom_ras()

    def panels(codes):
        raw, moved_affine = _reoriented(image, affine, codes)
        box = bounding_box(brain_mask(raw[None]))
        cropped = raw[box]
        normalised = (cropped - cropped.mean()) / cropped.std()
        # the same anatomical patch in each voxel order, inside the crop; an even number
        # of slices, so its middle slice is found in display order, not voxel order
        patch_ras = (slice(1, 8), slice(2, 11), slice(1, 5))
        crop_ras = bounding_box(brain_mask(image[None]))
        crop_shape_ras = image[crop_ras].shape
        patch = _box_in(patch_ras, crop_shape_ras, affine, codes)
        return preprocessing_figure(raw, box, normalised, patch, affine=moved_affine)

    fig_lps, fig = panels(("L", "P", "S")), panels(axcodes)
    expected = _imshow_arrays(fig_lps)
    for got, want in zip(_imshow_arrays(fig), expected, strict=True):
        assert np.array_equal(got, want)
    # the original panel is the radiological slice through the middle of the patch: the
    # crop holds RAS slices 1..8, the patch crop slices 1..4, their lower middle is crop
    # slice 2, original slice 3
    assert np.array_equal(expected[0], image[::-1, ::-1, 3].T)
    assert np.array_equal(_canvas(fig), _canvas(fig_lps))


@pytest.mark.slow
def test_real_case_lps_and_ras_copies_give_the_same_figures(shared_data, tmp_path):
    """BraTS2021_00000 as distributed (LPS) and through nibabel.as_closest_canonical (RAS)."""
    from brats_mtl.data import discover_cases, load_case
    from brats_mtl.preprocessing import patch_grid, preprocess_case

    source = shared_data / "brats" / "BraTS2021_00000"
    ras_dir = tmp_path / "ras" / "BraTS2021_00000"
    ras_dir.mkdir(parents=True)
    for path in source.glob("*.nii.gz"):
        img = nib.as_closest_canonical(nib.load(path))
        nib.save(img, ras_dir / path.name)
    (lps_files,) = [c for c in discover_cases(shared_data / "brats") if c.case_id == source.name]
    (ras_files,) = discover_cases(tmp_path / "ras")
    lps, ras = load_case(lps_files), load_case(ras_files)
    assert nib.aff2axcodes(lps.affine) == ("L", "P", "S")
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    assert not np.array_equal(lps.image, ras.image)  # a different voxel order

    flair = 3
    figs = [
        segmentation_figure(c.image[flair], c.labels, c.labels, title=c.case_id, affine=c.affine)
        for c in (lps, ras)
    ]
    assert np.array_equal(_canvas(figs[0]), _canvas(figs[1]))

    t2 = 2
    figs = []
    for case in (lps, ras):
        pre = preprocess_case(case)
        # one patch covering the whole crop: the same anatomy in both voxel orders (the
        # patch grid itself starts at voxel 0, a different corner in each order)
        (whole,) = patch_grid(pre.image.shape[1:], pre.image.shape[1:])
        figs.append(
            preprocessing_figure(case.image[t2], pre.box, pre.image[t2], whole, affine=case.affine)
        )
    assert np.array_equal(_canvas(figs[0]), _canvas(figs[1]))
