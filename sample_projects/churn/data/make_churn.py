"""Generate ``churn.csv``: a synthetic telecom churn table (fixed seed, so the file is reproducible).

Run ``python data/make_churn.py`` from the project folder to rewrite it. Churn is driven by a
logistic model of contract type, tenure, support calls, fibre and charges, plus an interaction
(many support calls on a month-to-month contract) that a linear model only partly captures.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SEED = 20240601
ROWS = 3000
CONTRACTS = ("month-to-month", "one-year", "two-year")


def make_rows(rows: int = ROWS, seed: int = SEED) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    tenure = np.clip(np.round(rng.exponential(24.0, rows)) + 1, 1, 72).astype(int)
    # Long-standing customers more often sit on longer contracts.
    p_long = 1 / (1 + np.exp(-(tenure - 30) / 12))
    u = rng.random(rows)
    contract = np.where(u < 1 - 0.8 * p_long, 0, np.where(rng.random(rows) < 0.55, 1, 2))
    has_fiber = (rng.random(rows) < 0.45).astype(int)
    senior = (rng.random(rows) < 0.16).astype(int)
    paperless = (rng.random(rows) < 0.6).astype(int)
    monthly = np.clip(22 + 28 * has_fiber + rng.normal(35, 14, rows), 18.25, 118.75).round(2)
    total = (monthly * tenure * rng.normal(1.0, 0.04, rows)).clip(18.25).round(2)
    support = rng.poisson(0.9 + 0.8 * has_fiber + 0.5 * (contract == 0), rows)

    logit = (
        -2.7
        + 1.5 * (contract == 0)
        - 1.0 * (contract == 2)
        - 0.07 * tenure
        + 0.7 * support
        + 0.9 * has_fiber
        + 0.015 * (monthly - 65)
        + 0.35 * senior
        + 0.25 * paperless
        + 0.9 * ((support >= 3) & (contract == 0))
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return [
        {
            "tenure_months": int(tenure[i]),
            "monthly_charges": float(monthly[i]),
            "total_charges": float(total[i]),
            "support_calls": int(support[i]),
            "has_fiber": int(has_fiber[i]),
            "senior_citizen": int(senior[i]),
            "paperless_billing": int(paperless[i]),
            "contract": CONTRACTS[int(contract[i])],
            "churned": int(churned[i]),
        }
        for i in range(rows)
    ]


def main() -> None:
    rows = make_rows()
    out = Path(__file__).with_name("churn.csv")
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    rate = sum(int(r["churned"]) for r in rows) / len(rows)  # type: ignore[call-overload]
    print(f"wrote {len(rows)} rows to {out} (churn rate {rate:.1%})")


if __name__ == "__main__":
    main()
