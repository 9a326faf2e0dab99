"""Takedowns (the actioner): notices, re-checks, abuse contacts, compliance prediction."""
