"""Evaluations of trained models: clean classification, MJP's shuffled-input accuracy and consistency,
ImageNet-C/A/O robustness, PE probes and the pretext loss of pretrained encoders."""
