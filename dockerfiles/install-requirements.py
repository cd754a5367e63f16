"""Install a pinned requirements file into the image's virtualenv and prove what landed.

Run by the Dockerfile with the virtualenv's python:

    python install-requirements.py REQUIREMENTS --lock OUT [--wheelhouse DIR] [--no-deps]
                                  [--also EXTRA_REQUIREMENTS]

- With wheels in ``--wheelhouse`` pip installs from there alone (``--no-index``): the offline
  and air-gapped build. Without, from the configured index.
- Then ``pip freeze`` is written to ``--lock`` (``/opt/mlplat/lock.txt`` in the image), and
  the build fails unless every package installed is pinned in REQUIREMENTS at that version
  and every pin is installed: the image's ``io.mlplat.lock`` label (the sha256 of the pins,
  see ``mlplat_tui/docker/images.py``) then truly describes what the image holds. Packages from
  ``--also`` (optional extras such as the CUDA libraries) are installed and recorded but not
  held to the pins.
- Without ``--no-deps`` ``pip check`` must pass too.

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """``name -> version`` of every ``name[extras]==version`` line; comments and blanks skipped."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if m:
            out[canonical(m.group(1))] = m.group(3)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("requirements", type=Path)
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--wheelhouse", type=Path)
    p.add_argument("--no-deps", action="store_true")
    p.add_argument("--also", type=Path, action="append", default=[])
    a = p.parse_args()

    pip = [sys.executable, "-m", "pip"]
    source: list[str] = []
    if a.wheelhouse and any(a.wheelhouse.glob("*.whl")):
        source = ["--no-index", "--find-links", str(a.wheelhouse)]
        print(f"installing from the wheelhouse ({len(list(a.wheelhouse.glob('*.whl')))} wheels)", flush=True)
    else:
        print("installing from the package index (no wheelhouse in the build context)", flush=True)
    base = [*pip, "install", "--no-cache-dir", "--disable-pip-version-check", "--progress-bar", "off"]
    subprocess.run(
        [*base, *source, *(["--no-deps"] if a.no_deps else []), "-r", str(a.requirements)], check=True
    )
    for extra in a.also:
        subprocess.run([*base, *source, "-r", str(extra)], check=True)

    # pip freeze leaves out pip, setuptools and wheel: the venv's own tools, not requirements.
    frozen = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True).stdout
    a.lock.write_text(frozen)
    wanted = pins(a.requirements.read_text())
    got = pins(frozen)
    problems = [
        f"{n}=={v} pinned but {got.get(n, 'not installed')}"
        for n, v in sorted(wanted.items())
        if got.get(n) != v
    ]
    if not a.also:
        problems += [f"{n}=={v} installed but not pinned" for n, v in sorted(got.items()) if n not in wanted]
    if problems:
        print("the installed packages differ from the pins:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if not a.no_deps:
        subprocess.run([*pip, "check"], check=True)
    print(f"installed {len(got)} packages; lock written to {a.lock}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
