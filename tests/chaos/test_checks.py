"""The fault suite's checks, on made-up runs: each catches what it is meant to catch."""

from __future__ import annotations

import random
from typing import Any

from bench.chaos.check import Execution, Fault, Job, Run, check_run, parse_log
from bench.chaos.faults import KINDS, Faults, Fleet


def job(
    id: str,
    status: str = "complete",
    *,
    key: str | None = None,
    q: int = 0,
    dedupe: str | None = None,
    x: str = "complete",
    history: list[tuple[str, float, str | None]] | None = None,
) -> Job:
    end = 10.0 + q
    return Job(
        id=id,
        status=status,
        attempts=1,
        max_attempts=6,
        key=key,
        dedupe=dedupe,
        payload={"s": 0, "q": q, "x": x},
        history=history
        if history is not None
        else [("queued", 1.0, None), ("processing", 2.0, None), (status, end, None)],
    )


def ex(job: str, start: float, end: float, pid: int = 1, attempt: int = 1) -> Execution:
    # Both clocks equal in these runs.
    return Execution(job, attempt, pid, start, start, end, "ok")


def run(
    jobs: list[Job],
    executions: list[Execution],
    submits: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> Run:
    return Run(
        jobs=jobs,
        dead_letter_jobs=extra.pop("dead", set()),
        submits=submits if submits is not None else [{"ids": [j.id], "t": 1.0} for j in jobs],
        executions=executions,
        faults=extra.pop("faults", []),
        window=(0.0, 100.0),
        window_wall=(0.0, 100.0),
        **extra,
    )


def failed_checks(r: Run) -> set[str]:
    return {name for name, c in check_run(r)["checks"].items() if not c["ok"]}


def test_a_clean_run_passes_every_check() -> None:
    jobs = [job("1", key="k", q=1), job("2", key="k", q=2), job("3")]
    execs = [ex("1", 2.0, 3.0), ex("2", 3.5, 4.0), ex("3", 2.0, 2.5)]
    result = check_run(run(jobs, execs))
    assert result["ok"], result["checks"]
    assert result["checks"]["key_order"]["keys"] == 1


def test_a_job_answered_but_not_stored_is_lost() -> None:
    r = run([job("1")], [ex("1", 2, 3)], submits=[{"ids": ["1", "2"], "t": 1.0}])
    assert failed_checks(r) == {"lost"}


def test_an_unfinished_job_is_lost() -> None:
    queued = job("1", "queued", history=[("queued", 1.0, None)])
    assert failed_checks(run([queued], [])) == {"lost"}


def test_a_failed_job_needs_its_dead_letter_and_its_plan() -> None:
    failed = job("1", "failed", x="failed")
    assert failed_checks(run([failed], [ex("1", 2, 3)])) == {"lost"}
    assert failed_checks(run([failed], [ex("1", 2, 3)], dead={"1"})) == set()
    # Planned to complete, but failed (not by interruptions alone).
    unplanned = job("2", "failed")
    assert failed_checks(run([unplanned], [ex("2", 2, 3)], dead={"2"})) == {"lost"}


def test_a_job_out_of_attempts_through_interruptions_is_reported_not_lost() -> None:
    hist: list[tuple[str, float, str | None]] = [("queued", 1.0, None)]
    for i in range(6):
        hist += [("processing", 2.0 + i, None), ("queued", 2.5 + i, "interrupted: runner lost")]
    hist[-1] = ("failed", 9.0, "interrupted: runner lost")
    j = job("1", "failed", history=hist)
    j.attempts = 6
    result = check_run(run([j], [ex("1", 2, 3)], dead={"1"}))
    assert result["ok"]
    assert result["figures"]["exhausted_by_faults"]["count"] == 1


def test_two_terminal_entries_or_a_start_after_the_finish_are_double_terminal() -> None:
    twice = job(
        "1",
        history=[("queued", 1.0, None), ("complete", 2.0, None), ("complete", 3.0, None)],
    )
    assert failed_checks(run([twice], [ex("1", 1.5, 1.8)])) == {"double_terminal"}
    done = job("2")  # complete at 10.0
    assert failed_checks(run([done], [ex("2", 2, 3), ex("2", 10.5, 11, pid=2, attempt=2)])) == {
        "double_terminal"
    }


def test_a_key_job_starting_before_the_previous_one_ended_breaks_order() -> None:
    jobs = [job("1", key="k", q=1), job("2", key="k", q=2)]
    overlap = check_run(run(jobs, [ex("1", 2.0, 5.0), ex("2", 4.0, 6.0)]))
    assert overlap["checks"]["key_order"]["overlap"] == 1
    reordered = check_run(run(jobs, [ex("1", 3.0, 5.0), ex("2", 2.0, 2.5)]))
    assert reordered["checks"]["key_order"]["out_of_order"] == 1
    # An earlier, interrupted execution counts too: job 1 ran twice; job 2 started between.
    twice = [ex("1", 2.0, 3.0), ex("1", 4.0, 5.0, pid=2, attempt=2), ex("2", 3.5, 3.8)]
    assert check_run(run(jobs, twice))["checks"]["key_order"]["overlap"] == 1


def test_an_execution_cut_by_its_process_death_ends_at_the_death() -> None:
    lines = [
        "S 1 1 7 2.0 2.0",
        "S 2 1 7 2.1 2.1",
        "E 2 1 7 2.2 2.2 ok",
        "S 3 1 7 2.3",  # cut short by the kill
    ]
    execs = parse_log(lines, {7: 4.0})
    assert [(e.job, e.end, e.outcome) for e in execs] == [("1", 4.0, "died"), ("2", 2.2, "ok")]
    jobs = [job("1", key="k", q=1), job("2", key="k", q=2)]
    early = run(jobs, [*execs[:1], ex("2", 3.0, 3.5, pid=8)])
    assert check_run(early)["checks"]["key_order"]["overlap"] == 1
    after = run(jobs, [*execs[:1], ex("2", 4.5, 5.0, pid=8)])
    assert check_run(after)["ok"]


def test_dedupe_allows_one_job_per_key_and_one_answer() -> None:
    two = [job("1", dedupe="d"), job("2", dedupe="d")]
    assert failed_checks(run(two, [ex("1", 2, 3), ex("2", 2, 3)])) == {"dedupe"}
    one = [job("1", dedupe="d")]
    answers = [{"ids": ["1"], "d": "d", "t": 1.0}, {"ids": ["9"], "d": "d", "t": 1.0}]
    assert "dedupe" in failed_checks(run(one, [ex("1", 2, 3)], submits=answers))


def test_a_runner_exit_nobody_asked_for_fails() -> None:
    r = run([job("1")], [ex("1", 2, 3)], runner_exits=[{"pid": 5, "status": 1}])
    assert failed_checks(r) == {"runner_exits"}


def test_failover_is_the_kill_to_the_first_rerun_elsewhere() -> None:
    died = Execution("1", 1, 7, 2.0, 2.0, 5.0, "died")
    died2 = Execution("2", 1, 7, 2.5, 2.5, 5.0, "died")
    execs = [died, died2, ex("1", 5.4, 6, pid=8, attempt=2), ex("2", 5.9, 6.5, pid=8, attempt=2)]
    r = run([job("1"), job("2")], execs, faults=[Fault("kill9", 5.0, 7)])
    fo = check_run(r)["figures"]["failover"]
    assert fo["kills_with_jobs_in_flight"] == 1
    assert abs(fo["first_rerun_p50_s"] - 0.4) < 1e-6
    assert abs(fo["all_rerun_max_s"] - 0.9) < 1e-6
    assert fo["never_rerun"] == []


def test_the_fault_schedule_draws_every_kind_before_repeating_one(tmp_path: Any) -> None:
    for engine, kinds in KINDS.items():
        fleet = Fleet("sqlite:///x.db", 1, tmp_path)
        faults = Faults(engine, fleet, random.Random(3))
        first = [faults.next_kind() for _ in kinds]
        assert sorted(first) == sorted(kinds)
        again = Faults(engine, fleet, random.Random(3))
        assert [again.next_kind() for _ in range(20)][: len(kinds)] == first


def test_an_attempt_run_twice_is_missing_from_history_unless_a_server_crash_erased_it() -> None:
    twice = [ex("1", 2.0, 2.5, pid=7), ex("1", 3.0, 3.5, pid=8)]  # both attempt 1
    r = run([job("1")], twice)
    assert failed_checks(r) == {"attempts"}
    crashed = run([job("1")], twice, faults=[Fault("pg_crash", 2.3)])
    result = check_run(crashed)
    assert result["ok"]
    assert result["checks"]["attempts"]["erased_by_server_crash"] == 1
    # The server dies while the stop runs: a start just after the stop's call, before the
    # stop returned, may have been erased too.
    during = run([job("1")], twice, faults=[Fault("pg_crash", 1.99, detail={"stop_s": 0.1})])
    assert check_run(during)["ok"]
    # A crash long after the start cannot have erased it.
    late = run([job("1")], [ex("1", 2.0, 2.5, pid=7), ex("1", 4.0, 4.5, pid=8)])
    late.faults = [Fault("pg_crash", 3.5)]
    assert failed_checks(late) == {"attempts"}
