"""Tests of brats_mtl.evaluation."""
