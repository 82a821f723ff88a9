"""Training stages on one engine (engine.py): supervised training, fine-tuning and linear probing of
pretrained encoders (supervised.py, finetune.py) and MAE / MAE+ / AdPE pretraining (pretrain.py)."""
