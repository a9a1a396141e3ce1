"""Clearway services: ingest, fares, settlement, accounts."""
