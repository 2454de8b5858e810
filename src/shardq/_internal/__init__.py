"""Private machinery of shardq; nothing here is public API."""
