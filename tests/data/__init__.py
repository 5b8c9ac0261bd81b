"""Tests of brats_mtl.data."""
