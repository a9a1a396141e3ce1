"""Council usage reports built from the journeys stream (docs/reports.md)."""
