"""Figures of the paper (Figs. 1, 3, 4) and training curves; matplotlib is imported lazily."""
