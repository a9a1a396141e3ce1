"""Doors into the fare engine (the `clearway fares ...` CLI lives in `cli.py`)."""
