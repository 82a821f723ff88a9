"""Evaluations of trained models (classification now; shuffle sweep, consistency, robustness later)."""
