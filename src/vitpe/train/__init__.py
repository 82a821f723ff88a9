"""Training: one engine (engine.py) and the methods that drive it (supervised.py; SSL later)."""
