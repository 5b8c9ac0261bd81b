"""Tests of brats_mtl, laid out as src/brats_mtl is."""
