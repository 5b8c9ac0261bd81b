"""Seconds per case of BraTS evaluation beside medpy and brats-evaluation, same masks.

Reference: a real 240 x 240 x 155 segmentation from ``../shared/data/brats`` when present,
else a phantom of that size. Prediction: the reference shifted by (2, -1, 1) voxels, its
edema grown by 2 voxels and its ET shrunk by 1, so every region has a non-trivial HD95.

    flock /tmp/brats-heavy.lock .venv/bin/python benchmarks/bench_evaluation.py [--repeats 5]

Prints, on the same masks in one run:

- legacy protocol: ``brats_mtl.evaluation.evaluate_labels`` (which also computes
  sensitivity and specificity) and ``medpy.metric.binary.dc`` + ``hd95`` per region, their
  ratio and the largest absolute difference between the two sets of values;
- lesionwise protocol: ``brats_mtl.evaluation.lesionwise.evaluate_lesionwise`` (GLI
  parameters) and, when installed, the BraTS 2026 evaluator ``brats-evaluation``
  (``evaluate_single_exam`` with its ``gli`` config) on the same masks, and their ratio.
  Both work on masks in memory; reading the files is not timed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from brats_mtl.conventions import REGION_ORDER, REGIONS
from brats_mtl.evaluation import evaluate_labels

SHARED_BRATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats"
SHAPE = (240, 240, 155)


def reference_labels() -> tuple[np.ndarray, tuple[float, float, float], str]:
    """Internal labels uint8 (240, 240, 155), spacing in mm, and where they come from."""
    if SHARED_BRATS.is_dir():
        from brats_mtl.data import discover_cases, load_label_map

        case = next(c for c in discover_cases(SHARED_BRATS) if c.labeled)
        labels, _, spacing_mm = load_label_map(case.seg, case.label_convention)
        return labels, spacing_mm, f"real case {case.case_id}"
    from brats_mtl.data import make_phantom

    _, labels = make_phantom(SHAPE, seed=0)
    return labels, (1.0, 1.0, 1.0), "phantom (shared data absent)"


def perturb(ref: np.ndarray) -> np.ndarray:
    """Shift, grow the edema, shrink ET: a plausible imperfect prediction."""
    pred = np.roll(ref, (2, -1, 1), axis=(0, 1, 2))
    grown = ndimage.binary_dilation(pred > 0, iterations=2) & (pred == 0)
    pred[grown] = 2
    et = pred == 4
    pred[et & ~ndimage.binary_erosion(et)] = 1
    return pred


def medpy_case(pred: np.ndarray, ref: np.ndarray, spacing_mm) -> dict[str, float]:
    from medpy.metric.binary import dc, hd95

    out = {}
    for region in REGION_ORDER:
        p, r = np.isin(pred, REGIONS[region]), np.isin(ref, REGIONS[region])
        out[f"Dice_{region}"] = dc(p, r)
        out[f"Hausdorff95_{region}"] = hd95(p, r, voxelspacing=spacing_mm)
    return out


def timed(function, repeats: int):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of ours (best kept)")
    parser.add_argument("--medpy-repeats", type=int, default=1, help="runs of medpy")
    parser.add_argument("--panoptica-repeats", type=int, default=1, help="runs of brats-evaluation")
    args = parser.parse_args()

    ref, spacing_mm, source = reference_labels()
    pred = perturb(ref)
    ours_s, ours = timed(lambda: evaluate_labels(pred, ref, spacing_mm), args.repeats)
    medpy_s, theirs = timed(lambda: medpy_case(pred, ref, spacing_mm), args.medpy_repeats)
    diff = max(abs(ours[k] - theirs[k]) for k in theirs)

    print(f"reference: {source}, shape {ref.shape}, spacing {spacing_mm} mm")
    for region in REGION_ORDER:
        print(
            f"  {region}: Dice {ours[f'Dice_{region}']:.6f} (medpy {theirs[f'Dice_{region}']:.6f})"
            f"  HD95 {ours[f'Hausdorff95_{region}']:.6f} mm"
            f" (medpy {theirs[f'Hausdorff95_{region}']:.6f})"
        )
    print(f"brats_mtl evaluate_labels: {ours_s:.3f} s/case (best of {args.repeats})")
    print(f"medpy dc + hd95:           {medpy_s:.3f} s/case (best of {args.medpy_repeats})")
    print(f"speed-up: {medpy_s / ours_s:.1f}x   max |difference|: {diff:.3g}")
    lesionwise(pred, ref, spacing_mm, args.repeats, args.panoptica_repeats)


def lesionwise(pred, ref, spacing_mm, repeats: int, panoptica_repeats: int) -> None:
    """Lesion-wise protocol beside brats-evaluation on the same masks."""
    from brats_mtl.evaluation.lesionwise import evaluate_lesionwise
    from brats_mtl.evaluation.panoptica import panoptica_available
    from brats_mtl.tasks import BRATS2017, LESIONWISE_PARAMETERS

    parameters = LESIONWISE_PARAMETERS["GLI"]
    evaluate_lesionwise(pred, ref, BRATS2017, parameters, spacing_mm)  # imports, caches
    ours_s, ours = timed(
        lambda: evaluate_lesionwise(pred, ref, BRATS2017, parameters, spacing_mm), repeats
    )
    print("lesionwise protocol (GLI: dilation 3, lesions > 50 mm^3):")
    for region in REGION_ORDER:
        print(
            f"  {region}: lesion-wise Dice {ours[f'LesionWise_Dice_{region}']:.6f}"
            f"  HD95 {ours[f'LesionWise_Hausdorff95_{region}']:.6f} mm"
            f"  TP/FP/FN {ours[f'Num_TP_{region}']:.0f}/{ours[f'Num_FP_{region}']:.0f}/"
            f"{ours[f'Num_FN_{region}']:.0f}"
        )
    print(f"brats_mtl evaluate_lesionwise: {ours_s:.3f} s/case (best of {repeats})")
    if not panoptica_available():
        print('brats-evaluation: not installed (pip install "brats-mtl[brats2026]")')
        return
    import nibabel as nib
    from brats_evaluation import config_path, evaluate_single_exam
    from panoptica import Panoptica_Evaluator

    from brats_mtl.conventions import BRATS_2023

    evaluator = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
    affine = np.diag([*spacing_mm, 1.0])
    pred_img = nib.Nifti1Image(BRATS_2023.from_internal(pred), affine)
    ref_img = nib.Nifti1Image(BRATS_2023.from_internal(ref), affine)
    theirs_s, _ = timed(
        lambda: evaluate_single_exam(pred_img, ref_img, "case", evaluator), panoptica_repeats
    )
    print(f"brats-evaluation (panoptica): {theirs_s:.3f} s/case (best of {panoptica_repeats})")
    print(f"speed-up: {theirs_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
