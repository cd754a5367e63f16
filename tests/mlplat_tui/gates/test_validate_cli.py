"""``mlplat validate`` as a user runs it, with the stack down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.models import make_bundle
from tests.helpers.stack import free_port_base


def _validate(project: Path, bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplat_tui", "--project", str(project), "validate", str(bundle), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def _project(root: Path) -> Path:
    root.mkdir()
    (root / "mlplat.toml").write_text(
        '[project]\nname = "gated"\n[model]\nname = "m"\n'
        f"[stack]\nport_base = {free_port_base()}\n"
        '[gates]\n"metrics.roc_auc" = ">= 0.5"\nno_regression = { metric = "roc_auc", tolerance = 0.01 }\n'
    )
    return root


def test_validate_with_the_stack_down_does_not_pass_what_it_could_not_check(tmp_path: Path) -> None:
    """Bug (issue 9): with the stack down, no_regression said "no champion yet" and passed."""
    project = _project(tmp_path / "proj")
    project.joinpath(".mlplat", "stack").mkdir(parents=True)  # a stack ran here: a champion may exist
    bundle = make_bundle(tmp_path, "m", version="2", metrics={"roc_auc": 0.9})
    done = _validate(project, bundle)
    assert done.returncode == 1, done.stderr
    gates = {g["name"]: g for g in json.loads(done.stdout)["gates"]}
    assert gates["metrics.roc_auc"]["passed"] and gates["metrics.roc_auc"]["op"] == ">="
    for name in ("no_regression", "signature"):
        assert not gates[name]["passed"] and not gates[name]["evaluated"]
        assert gates[name]["detail"].startswith("could not be evaluated: ")
        assert "no champion" not in gates[name]["detail"]


def test_validate_in_a_project_whose_stack_never_ran_has_no_champion(tmp_path: Path) -> None:
    project = _project(tmp_path / "fresh")
    bundle = make_bundle(tmp_path, "m", version="1", metrics={"roc_auc": 0.9})
    done = _validate(project, bundle)
    assert done.returncode == 0, done.stdout + done.stderr
    gates = {g["name"]: g for g in json.loads(done.stdout)["gates"]}
    assert gates["no_regression"]["detail"] == "no champion yet" and gates["no_regression"]["evaluated"]
