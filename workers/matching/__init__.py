"""Matching (the matcher): indexes, the PDQ kernel, confidence, the matcher service, hash banks."""
