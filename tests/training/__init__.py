"""Tests of brats_mtl.training."""
