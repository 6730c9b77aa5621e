"""Frozen text encoders (Hugging Face encoder and decoder models) with an on-disk cache."""
