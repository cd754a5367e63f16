"""A burst of saves is one change, reported once the project has been quiet."""

from __future__ import annotations

import queue
import time

from mlplat_tui.devloop.debounce import Change, Debouncer


def _run(pushes: list[tuple[float, str]], quiet_s: float, wait_s: float) -> list[tuple[Change, float]]:
    got: queue.Queue[tuple[Change, float]] = queue.Queue()
    deb = Debouncer(lambda c: got.put((c, time.monotonic())), quiet_s)
    deb.start()
    try:
        start = time.monotonic()
        for at, path in pushes:
            time.sleep(max(0.0, start + at - time.monotonic()))
            deb.push(path)
        time.sleep(wait_s)
    finally:
        deb.stop()
    out = []
    while not got.empty():
        out.append(got.get())
    return out


def test_burst_of_five_saves_within_200ms_is_one_change() -> None:
    before = time.monotonic()
    pushes = [
        (0.0, "train.py"),
        (0.05, "train.py"),
        (0.1, "lib/f.py"),
        (0.15, "train.py"),
        (0.2, "data/d.csv"),
    ]
    changes = _run(pushes, quiet_s=0.15, wait_s=0.5)
    assert len(changes) == 1
    change, reported_at = changes[0]
    assert change.files == ("data/d.csv", "lib/f.py", "train.py")
    # timed from the first save of the burst, reported only after the quiet period
    assert before <= change.first_at < before + 0.05
    assert change.last_at - change.first_at >= 0.19
    assert reported_at - change.last_at >= 0.15


def test_separate_bursts_are_separate_changes() -> None:
    changes = _run([(0.0, "a.py"), (0.03, "a.py"), (0.4, "b.py")], quiet_s=0.1, wait_s=0.4)
    assert [c.files for c, _ in changes] == [("a.py",), ("b.py",)]


def test_stop_drops_pending_and_flush_takes_it() -> None:
    deb = Debouncer(lambda c: None, quiet_s=10)
    deb.start()
    deb.push("x.py")
    pending = deb.flush()
    assert pending is not None and pending.files == ("x.py",)
    assert deb.flush() is None
    deb.stop()


def test_merge_keeps_the_earliest_save() -> None:
    a = Change(("a.py",), first_at=1.0, last_at=1.1, first_wall=100.0)
    b = Change(("b.py", "a.py"), first_at=2.0, last_at=2.5, first_wall=101.0)
    m = a.merge(b)
    assert m.files == ("a.py", "b.py")
    assert (m.first_at, m.last_at, m.first_wall) == (1.0, 2.5, 100.0)
