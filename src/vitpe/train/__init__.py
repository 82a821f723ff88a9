"""Training: one engine (engine.py) and the methods that drive it (supervised.py here; MAE, MAE+ and
AdPE pretraining, fine-tuning and linear probing in vitpe.mae)."""
