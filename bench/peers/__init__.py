"""Peer adapters: one module per queue, same workload and method as shardq's measurements.

Each module exposes ``SETTINGS`` (what a reader needs to reproduce the run) and
``measure(target, scenario, params)``. They import their queue lazily, so the orchestrator
can read ``SETTINGS`` without the peer installed; they run in ``bench/.peers/venv``.
"""
