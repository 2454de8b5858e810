from __future__ import annotations

from shardq.drivers.base import JobRef
from shardq.mailbox import Mailbox


def ref(i: int) -> JobRef:
    return JobRef(id=i, priority=2, run_at=0, key="k", shard=0, type="t")


def test_delivers_in_id_order_even_when_offered_out_of_order() -> None:
    mb = Mailbox("k", capacity=10, now=0)
    for i in (3, 1, 2):
        assert mb.offer(ref(i)) is None
    assert [mb.take().id for _ in range(3)] == [1, 2, 3]


def test_capacity_bounds_memory_and_keeps_the_earliest() -> None:
    mb = Mailbox("k", capacity=2, now=0)
    mb.offer(ref(5))
    mb.offer(ref(6))
    dropped = mb.offer(ref(4))
    assert dropped is not None and dropped.id == 6
    assert mb.overflow
    assert [mb.take().id, mb.take().id] == [4, 5]
    assert mb.needs_refill()


def test_a_retry_goes_back_to_the_head() -> None:
    mb = Mailbox("k", capacity=10, now=0)
    mb.extend([ref(1), ref(2)])
    first = mb.take()
    assert mb.busy
    mb.put_back(first)
    mb.release(now=1)
    assert mb.head() is first


def test_idle_eviction_waits_for_max_idle_and_never_takes_a_busy_box() -> None:
    mb = Mailbox("k", capacity=10, now=0)
    mb.offer(ref(1))
    mb.take()
    assert not mb.evictable(now=1_000, max_idle=300)  # busy: a long job keeps it alive
    mb.release(now=1_000)
    assert not mb.evictable(now=1_100, max_idle=300)
    assert mb.evictable(now=1_300, max_idle=300)


def test_after_an_overflow_later_jobs_wait_in_storage_behind_earlier_ones() -> None:
    mb = Mailbox("k", capacity=2, now=0)
    mb.extend([ref(1), ref(2)])
    assert mb.offer(ref(3)) is not None  # 3 stays in storage
    mb.take()
    mb.release(now=1)
    # Room again, but 3 is still only in storage: 4 must not overtake it.
    dropped = mb.offer(ref(4))
    assert dropped is not None and dropped.id == 4
    assert [r.id for r in [mb.take()]] == [2]
    assert mb.needs_refill()


def test_jobs_after_a_partial_read_go_back_to_storage() -> None:
    # A refill read jobs up to 3 and storage holds more; 9 reached memory during the read.
    mb = Mailbox("k", capacity=5, now=0)
    mb.extend([ref(9), ref(2), ref(3)])
    assert [r.id for r in mb.drop_after(3)] == [9]
    assert mb.overflow
    assert [mb.take().id, mb.take().id] == [2, 3]
    assert mb.needs_refill()
