"""Tests of brats_mtl.inference."""
