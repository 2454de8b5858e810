"""The shardq benchmark: shardq and the queues users would pick instead, measured side by side.

Run it with ``scripts/bench`` (or ``python -m bench``); see ``BENCHMARKS.md``.
"""
