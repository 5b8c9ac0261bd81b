"""Tests of brats_mtl.cli: the commands and the rules they share."""
