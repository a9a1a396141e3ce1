"""`clearway soak`: the fleet at a steady tap rate for a bounded time, watched for memory
growth, consumer lag and error lines (docs/soak.md)."""
