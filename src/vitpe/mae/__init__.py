"""MAE, MAE+ and AdPE pretraining, fine-tuning and linear probing (reference/ADPE.md)."""
