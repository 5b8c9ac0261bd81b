"""The ``brats-mtl`` command line: one thin module per command, imported on first use."""
