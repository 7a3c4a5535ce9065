"""Builders that tests share: tiny tokenizers and checkpoints written to disk."""
