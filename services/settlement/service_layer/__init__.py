"""Settlement's use cases: post journeys (entrypoints/consumer.py), close a period, read
statements."""
