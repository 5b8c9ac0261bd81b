"""The folders brats-mtl owns."""
