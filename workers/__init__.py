"""RQ jobs: plain, idempotent functions. Job arguments are internal ids, never signals."""
