"""Datasets: the embedded generator (``synth``), layout checks (``check``) and subset helpers (``subsets``).

The embedded sets use the real on-disk layouts, so the same loaders and checks serve the real datasets.
"""
