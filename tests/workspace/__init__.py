"""Tests of brats_mtl.workspace."""
