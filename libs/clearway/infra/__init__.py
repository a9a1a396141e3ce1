"""Local infrastructure for development and tests: Kafka, PostgreSQL and Redis without Docker.

`clearway infra up|down|status` (see `cli`) drives `manager.LocalInfra`; services read
their addresses from `endpoints.Endpoints.from_env()`.
"""

from clearway.infra.endpoints import Endpoints, LocalPorts

__all__ = ["Endpoints", "LocalPorts"]
