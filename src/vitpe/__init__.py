"""vitpe: reproducibility workflow for MJP and AdPE."""
__version__ = "0.1.0"
