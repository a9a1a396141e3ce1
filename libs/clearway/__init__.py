"""Clearway shared libraries: money, telemetry, Kafka/DB/Redis plumbing, generated protobuf code."""
