"""Tests of brats_mtl.model."""
