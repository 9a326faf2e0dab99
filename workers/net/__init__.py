"""Outbound network access: one address policy, one guard proxy, one fetcher."""
