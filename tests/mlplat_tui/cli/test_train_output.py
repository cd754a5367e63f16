"""``mlplat train`` on a terminal: the elapsed-time line, and the exit codes its help documents."""

from __future__ import annotations

import re

from click.testing import CliRunner

from mlplat_tui.cli import cli
from mlplat_tui.cli.train import EXIT_CODES, ElapsedLine, elapsed_text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_elapsed_line_ticks_under_the_output_and_is_cleared_at_the_end() -> None:
    written: list[str] = []
    clock = Clock()
    line = ElapsedLine(written.append, clock=clock, interval_s=3600)  # ticks by hand here
    line.start()
    clock.now += 42
    line.tick()
    assert written[-1] == "\r\x1b[Ktraining… 42s"
    line.echo("  | epoch 3/10")
    assert written[-1] == "\r\x1b[K  | epoch 3/10\ntraining… 42s"
    clock.now += 100
    line.tick()
    assert written[-1].endswith("training… 2m22s")
    line.stop()
    assert written[-1] == "\r\x1b[K"
    line.echo("after")
    assert written[-1] == "after\n"  # no status line once training ended
    assert elapsed_text(59.9) == "training… 59s"


def test_help_documents_one_exit_code_per_outcome() -> None:
    out = CliRunner().invoke(cli, ["train", "--help"])
    assert out.exit_code == 0
    for outcome, code in EXIT_CODES.items():
        assert re.search(rf"^\s+{code}\s+{outcome}: ", out.output, re.MULTILINE), (outcome, out.output)
    assert set(EXIT_CODES) == {"deployed", "passed", "failed", "rejected", "cancelled"}
