"""brats-mtl: multi-task brain-tumor segmentation on BraTS MRI.

Segmentation with a shared 3-D U-Net encoder, a fully convolutional VAE decoder and an
enhancing-tumor (ET) presence classifier (BraTS 2019 multi-task paper), BraTS-exact
evaluation, and age-based survival prediction for GTR patients.

Heavy libraries (torch, lightning, matplotlib) are imported by the submodules that need
them, never here, so ``import brats_mtl`` stays cheap.
"""

__version__ = "0.1.0"
