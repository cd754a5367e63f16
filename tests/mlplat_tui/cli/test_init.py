"""``mlplat init``: both templates give a project that parses and trains at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mlplat_runtime.errors import UsageError
from mlplat_tui.cli.init import TEMPLATES, create_project, sanitize_name
from mlplat_tui.project.config import load_project

CONTRACT_VARS = ("MLPLAT_OUTPUT_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLPLAT_PROJECT_DIR")


def run_init(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The real command line, in a subprocess: exit code, stdout, stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlplat_tui", "init", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_template_trains_at_once(tmp_path: Path, template: str) -> None:
    created = create_project(tmp_path / "My Project", template)
    root = created.root
    assert created.name == "my-project"
    assert created.model_name == "my-project-model"
    assert {"mlplat.toml", "train.py", "README.md", ".gitignore", "data/train.csv"} <= set(created.files)
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in created.files)

    project = load_project(root)
    assert project.name == "my-project"
    assert project.config.model.name == "my-project-model"
    readme = (root / "README.md").read_text()
    assert "{{" not in readme and "{{" not in (root / "mlplat.toml").read_text()
    assert TEMPLATES[template] in readme

    env = {k: v for k, v in os.environ.items() if k not in CONTRACT_VARS}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [sys.executable, "train.py"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = root / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    for name, threshold in project.config.gates.thresholds.items():  # it passes its own gates
        if name.startswith("metrics."):
            assert threshold.holds(metrics[name.removeprefix("metrics.")]), (name, metrics)

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with np.load(out / "samples.npz", allow_pickle=False) as npz:
        x = npz["input:input"]
    assert [i.name for i in session.get_inputs()] == ["input"]
    label, proba = session.run(["label", "probabilities"], {"input": x})
    assert label.shape == (len(x),) and proba.shape == (len(x), 2)
    assert set(np.unique(label)) <= {0, 1}
    reference = json.loads((out / "reference.json").read_text())
    assert list(reference["features"]) == [f"feature_{i}" for i in range(1, x.shape[1] + 1)]
    # the data paths named in mlplat.toml exist, so lineage can hash them
    assert all((root / p).is_file() for p in project.config.data.paths)


def test_cli_creates_project_and_prints_next_steps(tmp_path: Path) -> None:
    code, output, err = run_init("new-proj", "--template", "torch", cwd=tmp_path)
    assert code == 0, output + err
    assert "cd new-proj" in output and "mlplat up" in output and "mlplat train" in output
    assert load_project(tmp_path / "new-proj").name == "new-proj"
    assert "import torch" in (tmp_path / "new-proj" / "train.py").read_text()


def test_cli_json_output(tmp_path: Path) -> None:
    code, output, err = run_init("Data Science 2025!", "--json", cwd=tmp_path)
    assert code == 0, output + err
    doc = json.loads(output)
    assert doc["project"] == "data-science-2025"
    assert doc["template"] == "sklearn"
    assert doc["model"] == "data-science-2025-model"
    assert Path(doc["path"]) == (tmp_path / "Data Science 2025!").resolve()
    assert "mlplat.toml" in doc["files"]
    assert doc["next"] == ["cd 'Data Science 2025!'", "mlplat up", "mlplat train"]


def test_init_in_current_folder_skips_cd(tmp_path: Path) -> None:
    code, output, err = run_init("--json", "--name", "here", cwd=tmp_path)
    assert code == 0, output + err
    assert json.loads(output)["next"] == ["mlplat up", "mlplat train"]
    assert load_project(tmp_path).name == "here"


def test_refuses_non_empty_folder_without_force(tmp_path: Path) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine\n")
    (dest / "train.py").write_text("# my own\n")
    with pytest.raises(UsageError) as info:
        create_project(dest, "sklearn")
    assert "not empty" in str(info.value) and "--force" in str(info.value)
    assert (dest / "train.py").read_text() == "# my own\n"  # nothing written
    assert not (dest / "mlplat.toml").exists()

    code, _, err = run_init(str(dest), cwd=tmp_path)
    assert code == 2 and "not empty" in err

    created = create_project(dest, "sklearn", force=True)
    assert (dest / "notes.txt").read_text() == "mine\n"  # unrelated files are kept
    assert "import numpy" in (dest / "train.py").read_text()  # same-named files are overwritten
    assert load_project(dest).name == created.name == "busy"


def test_refuses_a_file_and_an_unknown_template(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        create_project(tmp_path / "afile", "sklearn")
    with pytest.raises(UsageError, match="unknown template"):
        create_project(tmp_path / "new", "keras")
    code, _, err = run_init(str(tmp_path / "new"), "--template", "keras", cwd=tmp_path)
    assert code == 2 and "keras" in err and not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("churn", "churn"),
        ("My Project", "my-project"),
        ("  __Hidden.dir--  ", "hidden.dir"),
        ("élan vital", "lan-vital"),
        ("Model_V2.1", "model_v2.1"),
        ("x" * 100, "x" * 63),
        ("---", ""),
    ],
)
def test_sanitize_name(raw: str, expected: str) -> None:
    assert sanitize_name(raw) == expected


def test_explicit_name_is_checked_not_rewritten(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        create_project(tmp_path / "p", "sklearn", name="Bad Name")
    assert "bad-name" in str(info.value)  # the hint offers a valid one
    assert not (tmp_path / "p").exists()
    created = create_project(tmp_path / "p", "sklearn", name="good.name")
    assert load_project(created.root).name == "good.name"


def test_folder_without_a_usable_name_needs_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--name"):
        create_project(tmp_path / "___", "sklearn")
    assert create_project(tmp_path / "___", "sklearn", name="ok").name == "ok"


def test_template_files_survive_packaging() -> None:
    # pyproject ships templates with the glob "templates/**/*", which skips dotfiles and would
    # also ship stray build products: keep the tree to plain, visible files.
    base = Path(__file__).resolve().parents[3] / "mlplat_tui" / "templates"
    names = [p.relative_to(base).as_posix() for p in base.rglob("*")]
    assert {"_common", "sklearn", "torch"} <= {n.split("/")[0] for n in names}
    assert not [n for n in names if any(part.startswith(".") for part in n.split("/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/out" in n]
    pyproject = (base.parents[1] / "pyproject.toml").read_text()
    assert '"templates/**/*"' in pyproject
