"""MAE, MAE+ and AdPE as methods (docs/FIDELITY.md rows 50-66): the masked autoencoder around the
project's ViT (model.py), random masking and the pixel loss (masking.py), the adversarial PEs (adpe.py)
and their settings (settings.py). The pretraining stage that drives them is vitpe.train.pretrain."""
