"""shardq's own fault suite: ``scripts/chaos`` (``python -m bench.chaos``).

Runner processes work through a mixed keyed/unkeyed load while faults are injected at random
(kill -9 and SIGTERM of runners, ``pg_terminate_backend`` of their sessions, restarts and
crashes of a private PostgreSQL server); afterwards the jobs' stored state and every handler
execution the runners recorded are checked: nothing lost, no double terminal transition,
per-key order, dedupe; failover times and throughput during the faults are reported.

- ``app``: the application the runner processes serve; it records each execution.
- ``workload``: the submitter processes.
- ``faults``: the runner supervisor and the fault schedule.
- ``check``: the checks over the stored jobs and the recorded executions.
- ``cli``: the command, its summary and its JSON results.
"""
