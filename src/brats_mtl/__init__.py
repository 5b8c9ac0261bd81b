"""brats-mtl: multi-task brain-tumor segmentation on BraTS MRI.

Segmentation with a shared 3-D U-Net encoder, a fully convolutional VAE decoder and an
enhancing-tumor (ET) presence classifier (BraTS 2019 multi-task paper), BraTS-exact
evaluation, and age-based survival prediction for GTR patients.

Heavy libraries (torch, lightning, matplotlib) are imported by the submodules that need
them, never here, so ``import brats_mtl`` stays cheap.

Layers, lowest first: a module imports only from its own layer's package and the layers
before it, never from one after it (``tests/test_layering.py`` checks every import, also
those inside functions, and that no two modules import each other in a cycle)::

    conventions     labels, regions, modality names, HD95 penalties; Box, plural()
    atomic          the only writer (temp file, then rename)
    config          the configuration tree
    tasks           the BraTS label schemes of each task
    presets         paper / cpu / demo / tiny configurations
    signals         SIGTERM handling and Terminated
    data            discovery, NIfTI I/O, phantoms, splits
    preprocessing   crop, normalise, patch grid
    model           the network
    losses          the multi-task loss
    evaluation      metrics, per-case tables, protocols
    figures         slice, uncertainty and curve figures
    survival        age regression (its plot draws with figures)
    inference       sliding window, TTA, ensemble, post-processing, the per-case Segmenter
    workspace       the folders brats-mtl owns: run and prediction folders, the marker
    training        cache, datasets, Lightning module, k-fold runner
    predict         cohort prediction from a run folder
    pipeline        train -> predict -> evaluate -> survival -> report
    demo            the synthetic cohort and the demo run
    cli             the command line

``atomic`` sits below ``config`` because the configuration is saved through it;
``figures`` below ``survival`` because the survival plot is a figure.
"""

__version__ = "0.1.0"
