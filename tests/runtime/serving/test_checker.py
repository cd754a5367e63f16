"""The warm check process: it runs models, reports refusals, and a crash in it is survivable."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mlplat_runtime.errors import ModelLoadError
from mlplat_runtime.serving.checker import Checker, CheckerDied
from tests.helpers.models import make_logreg_onnx, make_unknown_op_onnx, write_corrupt_onnx
from tests.runtime.serving.conftest import kill_when_busy, make_slow_logreg_onnx

CPU = ["CPUExecutionProvider"]
X = {"input": np.zeros((2, 4), dtype=np.float32)}


@pytest.fixture
def checker() -> object:
    c = Checker(providers=CPU, timeout_s=60)
    c.start()
    yield c
    c.close()
    assert not c.alive


def test_check_runs_the_model_in_another_process(checker: Checker, tmp_path: Path) -> None:
    ms = checker.check(make_logreg_onnx(tmp_path / "m.onnx"), X)
    assert ms >= 0
    assert checker.pid is not None and checker.pid != os.getpid()
    # warm: a second check costs a session load and a run, not a Python start-up
    t = time.perf_counter()
    checker.check(make_logreg_onnx(tmp_path / "m2.onnx", seed=1), X)
    assert time.perf_counter() - t < 2.0


def test_refused_models_are_reported_and_the_child_lives_on(checker: Checker, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="refused the model in the check process"):
        checker.check(make_unknown_op_onnx(tmp_path / "u.onnx"), X)
    with pytest.raises(ModelLoadError, match="refused the model in the check process"):
        checker.check(write_corrupt_onnx(tmp_path / "c.onnx"), X)
    with pytest.raises(ModelLoadError, match="refused the model in the check process"):
        checker.check(make_logreg_onnx(tmp_path / "m.onnx"), {"input": np.zeros((2, 9), np.float32)})
    pid = checker.pid
    checker.check(make_logreg_onnx(tmp_path / "ok.onnx"), X)
    assert checker.pid == pid and checker.restarts == 0


def test_a_child_that_dies_mid_check_is_reported_and_replaced(checker: Checker, tmp_path: Path) -> None:
    good = make_logreg_onnx(tmp_path / "m.onnx")
    checker.check(good, X)  # warm, idle
    pid = checker.pid
    assert pid is not None
    slow = make_slow_logreg_onnx(tmp_path / "slow.onnx")
    killer = threading.Thread(target=kill_when_busy, args=(pid,))
    killer.start()
    with pytest.raises(CheckerDied) as err:
        checker.check(slow, X)
    killer.join()
    assert "crashed ONNX Runtime in the check process (killed by SIGKILL)" in err.value.message
    assert checker.restarts == 1
    assert checker.alive and checker.pid != pid  # already respawned for the next load
    checker.check(good, X)


def test_a_child_that_died_while_idle_is_restarted_on_the_next_check(
    checker: Checker, tmp_path: Path
) -> None:
    good = make_logreg_onnx(tmp_path / "m.onnx")
    checker.check(good, X)
    pid = checker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while checker.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    checker.check(good, X)
    assert checker.pid != pid


def test_a_check_that_takes_too_long_times_out(tmp_path: Path) -> None:
    c = Checker(providers=CPU, timeout_s=0.5)
    with contextlib.suppress(ModelLoadError):  # may time out on its own start-up
        c.check(make_logreg_onnx(tmp_path / "m.onnx"), X)
    c.timeout_s = 60
    c.check(make_logreg_onnx(tmp_path / "m.onnx"), X)  # warm now
    c.timeout_s = 0.3
    with pytest.raises(ModelLoadError, match="did not finish within"):
        c.check(make_slow_logreg_onnx(tmp_path / "slow.onnx"), X)
    c.close()
