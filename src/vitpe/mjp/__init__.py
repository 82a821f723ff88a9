"""Masked Jigsaw Puzzle (MJP, CVPR 2023): block-wise jigsaw shuffle, unknown PE row, DAL regressor."""
