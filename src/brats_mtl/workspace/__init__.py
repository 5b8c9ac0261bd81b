"""The folders brats-mtl owns: run folders, prediction folders, output folders.

- :mod:`~brats_mtl.workspace.run_dir`: :class:`~brats_mtl.workspace.run_dir.RunDir`, the
  training run folder's layout, configuration and fold models.
- :mod:`~brats_mtl.workspace.ownership`: the marker, claiming a folder, what
  ``--overwrite`` may remove, inputs kept outside outputs, the recorded run inputs.
- :mod:`~brats_mtl.workspace.prediction_dir`:
  :class:`~brats_mtl.workspace.prediction_dir.PredictionDir`, a prediction folder's
  layout, per-case records, settings, claim and resume.

Submodules are imported where used, so ``import brats_mtl.workspace`` loads nothing
heavy.
"""
