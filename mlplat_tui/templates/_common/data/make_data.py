"""Generate ``train.csv``: a small synthetic binary classification table (fixed seed).

It only exists so a new project trains at once. Replace ``train.csv`` with your own data:
numeric feature columns plus a ``label`` column of class ids; ``train.py`` reads any such file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SEED = 1234
ROWS = 800
FEATURES = 5


def main() -> None:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(ROWS, FEATURES)).round(4)
    logit = 2.4 * x[:, 0] - 1.8 * x[:, 1] + 1.2 * x[:, 2] * x[:, 3] + 0.6 * x[:, 4] ** 2 - 0.6
    label = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(int)
    out = Path(__file__).with_name("train.csv")
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*(f"feature_{i + 1}" for i in range(FEATURES)), "label"])
        writer.writerows([*row, lab] for row, lab in zip(x.tolist(), label.tolist(), strict=True))
    print(f"wrote {ROWS} rows to {out} ({label.mean():.1%} positive)")


if __name__ == "__main__":
    main()
