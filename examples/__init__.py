"""Runnable examples of shardq inside an application (run from the repository root)."""
