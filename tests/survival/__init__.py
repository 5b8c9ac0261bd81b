"""Tests of brats_mtl.survival."""
