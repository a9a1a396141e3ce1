"""A validator simulator: a synthetic network day streamed to ingest over gRPC."""
