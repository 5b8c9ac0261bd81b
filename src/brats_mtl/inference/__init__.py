"""Inference: sliding windows or whole volume, mirror TTA, fold ensemble, ET suppression.

Pure inference, no folders: prediction folders are ``brats_mtl.workspace.
prediction_dir``, cohorts (``predict_cohort``) are ``brats_mtl.predict``.

- :mod:`~brats_mtl.inference.tta`: mirror flips (0, 4 or 8 passes).
- :mod:`~brats_mtl.inference.sliding_window`: dense prediction of one cropped case.
- :mod:`~brats_mtl.inference.network`: predictors built from a ``MultiTaskNet``.
- :mod:`~brats_mtl.inference.ensemble`: majority vote of the fold models.
- :mod:`~brats_mtl.inference.postprocess`: ET suppression and its threshold.
- :mod:`~brats_mtl.inference.uncertainty`: voxel-wise uncertainty maps (QU-BraTS format)
  from the passes and folds: entropy and disagreement estimators.
- :mod:`~brats_mtl.inference.segmenter`: one case, from loaded images to its label map.

Source: paper, Inference and section 5.1; docs/design.md section 5.
"""

from brats_mtl.inference.ensemble import ENSEMBLE_METHODS, FoldEnsemble, majority_vote
from brats_mtl.inference.network import (
    network_predictor,
    network_volume_predictor,
    resolve_device,
    resolve_precision,
)
from brats_mtl.inference.postprocess import (
    et_dice,
    region_volumes_ml,
    select_et_min_voxels,
    suppress_et,
)
from brats_mtl.inference.segmenter import (
    CasePrediction,
    Segmenter,
    WholeVolumePredictor,
    check_inference_config,
    model_fingerprint,
)
from brats_mtl.inference.sliding_window import (
    VolumePrediction,
    gaussian_importance_map,
    predict_sliding_window,
    predict_whole_volume,
    sliding_window_boxes,
    window_starts,
)
from brats_mtl.inference.tta import flip_spatial, mirror_axes

__all__ = [
    "ENSEMBLE_METHODS",
    "CasePrediction",
    "FoldEnsemble",
    "Segmenter",
    "VolumePrediction",
    "WholeVolumePredictor",
    "check_inference_config",
    "et_dice",
    "flip_spatial",
    "gaussian_importance_map",
    "majority_vote",
    "model_fingerprint",
    "mirror_axes",
    "network_predictor",
    "network_volume_predictor",
    "predict_sliding_window",
    "predict_whole_volume",
    "region_volumes_ml",
    "resolve_device",
    "resolve_precision",
    "select_et_min_voxels",
    "sliding_window_boxes",
    "suppress_et",
    "window_starts",
]
