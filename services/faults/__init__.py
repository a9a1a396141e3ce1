"""`clearway faults`: a network day through the real processes while they are killed with
SIGKILL and Kafka, PostgreSQL and Redis restart under them, checked against a fault-free
run of the same day (docs/faults.md)."""
