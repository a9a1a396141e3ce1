"""Accounts: each card's journey history, stored from `journeys` and served over gRPC."""
