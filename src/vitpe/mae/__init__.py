"""MAE, MAE+ and AdPE pretraining, fine-tuning and linear probing (docs/FIDELITY.md rows 50-66)."""
