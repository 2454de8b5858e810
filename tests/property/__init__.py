"""Property-based tests of every entry point."""
