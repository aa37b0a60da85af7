"""Trained classifier kinds: each module has fit(...) and load(directory, meta)."""
