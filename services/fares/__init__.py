"""The fares service: prices taps into journeys from GTFS Fares v2 data."""
