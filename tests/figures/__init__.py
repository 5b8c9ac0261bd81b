"""Tests of brats_mtl.figures."""
