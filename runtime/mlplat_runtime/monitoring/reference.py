"""Reference v2: the training distributions that live traffic is compared with, in the bundle.

A training script calls :func:`compute_reference` on its training inputs (and the model's
outputs on the test split) and writes ``reference.model_dump_json()`` as ``reference.json``;
``build_bundle`` validates it against :class:`Reference`. Per input feature (a 1-D tensor is
one feature, the columns of a 2-D tensor are one feature each, named) it keeps:

- ``kind``: ``numeric`` or ``categorical``, declared in ``mlplat.toml`` (``[monitor.features]``,
  ``name = "categorical"``) or inferred (strings, booleans and at most 10 distinct whole numbers
  are categorical);
- ``edges`` (numeric): 20 equal-frequency bins fixed at training time (ties merge bins, so a
  column can have fewer); ``categories`` (categorical): the 20 most frequent values;
- ``counts``: the training rows in each slot, in the layout of :mod:`.drift` (numeric:
  underflow, bins, overflow, missing; categorical: categories, other, missing);
- ``min`` / ``max`` / ``missing_rate``;
- ``floors``: per window size (1000, 10000, 100000 rows) the 99th percentile of PSI, JS and KS
  over 200 random no-drift windows of that size. A window is a multinomial draw from the
  training slot shares, which is the same as resampling training rows with replacement and
  binning them, without touching the rows again. The monitor raises its triggers to these
  floors, so a small window of a coarse feature does not alert on noise.

Outputs (on the test split): ``label`` outputs keep their class mix; ``probabilities`` (2-D,
rows summing to 1) the argmax class mix, a histogram of the top-class probability on fixed edges
(0, 0.05, .., 1) and the share of uncertain predictions (top-2 margin < 0.1); ``value``
outputs (1-D float, regression) a numeric feature's bins. Other outputs (logits) are left out.

Data plane: numpy and pydantic only; ``tomllib`` reads the one table of ``mlplat.toml`` it needs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlplat_runtime.errors import ConfigError
from mlplat_runtime.monitoring import drift

REFERENCE_VERSION: Final = 2
N_BINS: Final = 20
TOP_CATEGORIES: Final = 20
WINDOW_SIZES: Final = (1000, 10000, 100000)
CALIBRATION_WINDOWS: Final = 200
CALIBRATION_QUANTILE: Final = 0.99
UNCERTAIN_MARGIN: Final = 0.1
PROBABILITY_EDGES: Final = tuple(round(i * 0.05, 2) for i in range(21))
MAX_CATEGORICAL_DISTINCT: Final = 10

Kind = Literal["numeric", "categorical"]
KINDS: Final = ("numeric", "categorical")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Floors(_Strict):
    """Scores that random no-drift windows of one size stay under 99% of the time."""

    psi: float = Field(ge=0)
    js: float = Field(ge=0, le=1)
    ks: float = Field(ge=0, le=1)


class FeatureRef(_Strict):
    """One input feature's training distribution in fixed slots (see :mod:`.drift`)."""

    name: str = Field(min_length=1)
    input: str  # the signature's input tensor
    column: int | None = Field(default=None, ge=0)  # the column of a 2-D tensor; None for 1-D
    kind: Kind
    edges: list[float] = Field(default_factory=list)  # numeric: ascending bin edges
    categories: list[float | str] = Field(default_factory=list)  # categorical: top values
    counts: list[int]
    count: int = Field(ge=0)  # training rows
    missing_rate: float = Field(ge=0, le=1)
    min: float | None = None
    max: float | None = None
    floors: dict[str, Floors] = Field(default_factory=dict)  # window size ("1000") -> floors

    @model_validator(mode="after")
    def _slots_match(self) -> FeatureRef:
        if self.kind == "numeric":
            if len(self.edges) < 2 or any(b < a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError(f"feature '{self.name}': numeric edges must be >= 2 ascending numbers")
            slots = len(self.edges) + 2
        else:
            slots = len(self.categories) + 2
        if len(self.counts) != slots:
            raise ValueError(
                f"feature '{self.name}': {len(self.counts)} counts for {slots} slots "
                "(numeric: underflow, bins, overflow, missing; categorical: categories, other, missing)"
            )
        if any(c < 0 for c in self.counts) or sum(self.counts) != self.count:
            raise ValueError(f"feature '{self.name}': counts must be >= 0 and sum to count ({self.count})")
        return self

    def floor(self, window_rows: int) -> Floors | None:
        """The floors of the calibrated window size nearest to ``window_rows`` (None if uncalibrated)."""
        if not self.floors:
            return None
        size = min(self.floors, key=lambda s: abs(np.log(int(s)) - np.log(max(window_rows, 1))))
        return self.floors[size]


class OutputRef(_Strict):
    """One output's distribution on the test split."""

    name: str
    kind: Literal["label", "probabilities", "value"]
    count: int = Field(ge=0)
    classes: list[str] = Field(default_factory=list)  # label / probabilities
    class_counts: list[int] = Field(default_factory=list)  # predicted class mix
    probability_edges: list[float] = Field(default_factory=list)  # probabilities: top-class histogram
    probability_counts: list[int] = Field(default_factory=list)
    uncertain_share: float | None = Field(default=None, ge=0, le=1)  # top-2 margin < 0.1
    value: FeatureRef | None = None  # value outputs: numeric bins

    @model_validator(mode="after")
    def _shapes(self) -> OutputRef:
        if len(self.class_counts) != len(self.classes):
            raise ValueError(f"output '{self.name}': one class count per class")
        if self.probability_edges and len(self.probability_counts) != len(self.probability_edges) - 1:
            raise ValueError(f"output '{self.name}': one probability count per histogram bin")
        return self


class Reference(_Strict):
    """``reference.json`` v2 (``build_bundle`` validates it; v1 files are kept with a warning)."""

    version: Literal[2] = REFERENCE_VERSION
    n_rows: int = Field(ge=0)  # training rows the features were computed on
    window_sizes: list[int] = Field(default_factory=lambda: list(WINDOW_SIZES))
    features: dict[str, FeatureRef]
    outputs: dict[str, OutputRef] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_match(self) -> Reference:
        for key, feature in self.features.items():
            if key != feature.name:
                raise ValueError(f"feature key '{key}' differs from its name '{feature.name}'")
        return self

    def columns_of(self, input_name: str) -> dict[int, str]:
        """Column index -> feature name for one 2-D input tensor (empty when none are named)."""
        return {
            f.column: f.name for f in self.features.values() if f.input == input_name and f.column is not None
        }


def parse_reference(data: Mapping[str, Any]) -> Reference | None:
    """The v2 reference in ``data``, or None for a v1 file (no ``version`` key, or 1).

    Raises ``pydantic.ValidationError`` for a v2 file that does not match the schema and
    ValueError for an unknown version.
    """
    version = data.get("version", 1)
    if version == 1:
        return None
    if version != REFERENCE_VERSION:
        raise ValueError(f"reference version {version!r} is not supported (1 or 2)")
    return Reference.model_validate(dict(data))


def project_feature_kinds(project_dir: Path | str) -> dict[str, Kind]:
    """``[monitor.features]`` of ``project_dir/mlplat.toml`` (feature name -> kind); {} when absent."""
    path = Path(project_dir) / "mlplat.toml"
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        table = tomllib.load(f).get("monitor", {}).get("features", {})
    kinds: dict[str, Kind] = {}
    for name, kind in table.items():
        if kind not in KINDS:
            raise ConfigError(str(path), f"monitor.features.{name}", '"numeric" or "categorical"', got=kind)
        kinds[name] = kind
    return kinds


def default_feature_name(tensor: str, column: int | None, *, single_input: bool) -> str:
    """The name of a feature no one named: ``x0..xN`` for the columns of the only input tensor."""
    if column is None:
        return tensor
    return f"x{column}" if single_input else f"{tensor}_x{column}"


def _is_missing(col: np.ndarray) -> np.ndarray:
    if col.dtype.kind == "f":
        return np.isnan(col)
    if col.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and v != v) for v in col], dtype=bool)
    return np.zeros(len(col), dtype=bool)


def infer_kind(col: np.ndarray) -> Kind:
    """Strings, booleans and at most 10 distinct whole numbers are categorical; else numeric."""
    if col.dtype.kind in "OUSb":
        return "categorical"
    values = col[~_is_missing(col)].astype(np.float64)
    distinct = np.unique(values)
    if len(distinct) <= MAX_CATEGORICAL_DISTINCT and np.all(distinct == np.round(distinct)):
        return "categorical"
    return "numeric"


def _calibrate(
    counts: np.ndarray, kind: Kind, rng: np.random.Generator, window_sizes: Sequence[int]
) -> dict[str, Floors]:
    total = counts.sum()
    if total == 0:
        return {}
    shares = counts / total
    floors = {}
    for size in window_sizes:
        windows = rng.multinomial(size, shares, size=CALIBRATION_WINDOWS)
        scores = {
            "psi": drift.psi(counts, windows),
            "js": drift.js(counts, windows),
            "ks": drift.ks_from_counts(counts, windows) if kind == "numeric" else np.zeros(1),
        }
        q = {k: float(np.quantile(v, CALIBRATION_QUANTILE)) for k, v in scores.items()}
        floors[str(size)] = Floors(psi=q["psi"], js=min(q["js"], 1.0), ks=min(q["ks"], 1.0))
    return floors


def _numeric_edges(values: np.ndarray) -> list[float]:
    if len(values) == 0:
        return [0.0, 0.0]
    qs = np.quantile(values.astype(np.float64), np.linspace(0, 1, N_BINS + 1))
    edges = np.unique(qs)
    if len(edges) == 1:
        edges = np.array([edges[0], edges[0]])
    return [float(e) for e in edges]


def _top_categories(values: np.ndarray) -> list[float | str]:
    if values.dtype.kind in "OUS":
        uniq, counts = np.unique(values.astype(str), return_counts=True)
        keys: list[float | str] = [str(u) for u in uniq]
    else:
        uniq, counts = np.unique(values.astype(np.float64), return_counts=True)
        keys = [float(u) for u in uniq]
    order = np.lexsort((np.arange(len(keys)), -counts))[:TOP_CATEGORIES]
    return [keys[i] for i in order]


def feature_reference(
    values: np.ndarray,
    *,
    name: str,
    input_name: str,
    column: int | None,
    kind: Kind | None = None,
    rng: np.random.Generator | None = None,
    window_sizes: Sequence[int] = WINDOW_SIZES,
) -> FeatureRef:
    """One feature's reference from its training values (1-D)."""
    col = np.asarray(values).ravel()
    if col.dtype.kind in "US":
        col = col.astype(object)
    missing = _is_missing(col)
    present = col[~missing]
    kind = kind or infer_kind(col)
    numeric_col = col.dtype.kind in "fiub"
    lo = float(np.min(present)) if numeric_col and len(present) else None
    hi = float(np.max(present)) if numeric_col and len(present) else None
    if kind == "numeric":
        if not numeric_col:
            raise ValueError(f"feature '{name}' is declared numeric but holds {col.dtype} values")
        edges = _numeric_edges(present)
        categories: list[float | str] = []
        counts = np.bincount(drift.numeric_slots(col, np.asarray(edges)), minlength=len(edges) + 2)
    else:
        edges = []
        categories = _top_categories(present)
        counts = np.bincount(drift.categorical_slots(col, categories), minlength=len(categories) + 2)
    floors = _calibrate(counts, kind, rng or np.random.default_rng(0), window_sizes)
    return FeatureRef(
        name=name,
        input=input_name,
        column=column,
        kind=kind,
        edges=edges,
        categories=categories,
        counts=[int(c) for c in counts],
        count=len(col),
        missing_rate=float(missing.mean()) if len(col) else 0.0,
        min=lo,
        max=hi,
        floors=floors,
    )


def output_reference(
    name: str, values: np.ndarray, *, rng: np.random.Generator | None = None
) -> OutputRef | None:
    """One output's distribution on the test split; None for outputs that are not described (logits)."""
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 1 and arr.dtype.kind in "iub":
        classes, counts = np.unique(arr, return_counts=True)
        return OutputRef(
            name=name,
            kind="label",
            count=len(arr),
            classes=[str(c) for c in classes],
            class_counts=[int(c) for c in counts],
        )
    if arr.ndim == 1 and arr.dtype.kind == "f":
        value = feature_reference(arr, name=name, input_name=name, column=None, kind="numeric", rng=rng)
        return OutputRef(name=name, kind="value", count=len(arr), value=value)
    if arr.ndim == 2 and arr.dtype.kind == "f" and arr.shape[1] >= 2 and len(arr):
        rows = arr.astype(np.float64)
        if np.all(rows >= -1e-6) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
            top2 = np.sort(rows, axis=1)[:, -2:]
            hist, _ = np.histogram(top2[:, 1], bins=np.asarray(PROBABILITY_EDGES))
            mix = np.bincount(rows.argmax(axis=1), minlength=rows.shape[1])
            return OutputRef(
                name=name,
                kind="probabilities",
                count=len(rows),
                classes=[str(i) for i in range(rows.shape[1])],
                class_counts=[int(c) for c in mix],
                probability_edges=list(PROBABILITY_EDGES),
                probability_counts=[int(c) for c in hist],
                uncertain_share=float(np.mean(top2[:, 1] - top2[:, 0] < UNCERTAIN_MARGIN)),
            )
    return None


def compute_reference(
    inputs: Mapping[str, np.ndarray] | np.ndarray,
    *,
    feature_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    kinds: Mapping[str, Kind] | None = None,
    project_dir: Path | str | None = None,
    outputs: Mapping[str, np.ndarray] | None = None,
    window_sizes: Sequence[int] = WINDOW_SIZES,
    seed: int = 0,
) -> Reference:
    """The v2 reference of the training inputs (and of the model's outputs on the test split).

    ``inputs`` maps input tensor names to training arrays (a bare array is the tensor
    ``input``). ``feature_names`` names the columns of a 2-D tensor (a list when there is one
    such tensor, else a mapping tensor -> list); unnamed columns are ``x0..xN``. ``kinds``
    declares feature kinds; with ``project_dir`` the ``[monitor.features]`` table of its
    ``mlplat.toml`` is read too (``kinds`` wins). Tensors of more than 2 dimensions (images)
    are left out. Write the result with ``reference.model_dump_json(indent=2)``.
    """
    tensors = {"input": inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
    declared: dict[str, Kind] = {}
    if project_dir is not None:
        declared.update(project_feature_kinds(project_dir))
    declared.update(kinds or {})
    rng = np.random.default_rng(seed)
    described = [t for t, a in tensors.items() if np.asarray(a).ndim in (1, 2)]
    single = len(described) == 1
    features: dict[str, FeatureRef] = {}
    n_rows = 0
    for tensor in described:
        arr = np.asarray(tensors[tensor])
        n_rows = max(n_rows, len(arr))
        if arr.ndim == 1:
            columns: list[tuple[int | None, np.ndarray]] = [(None, arr)]
        else:
            columns = [(i, arr[:, i]) for i in range(arr.shape[1])]
        names = _names_for(tensor, len(columns) if arr.ndim == 2 else 0, feature_names, single)
        for (column, values), name in zip(columns, names, strict=True):
            if name in features:
                raise ValueError(f"two features are named '{name}'; name the columns apart")
            features[name] = feature_reference(
                values,
                name=name,
                input_name=tensor,
                column=column,
                kind=declared.get(name),
                rng=rng,
                window_sizes=window_sizes,
            )
    unknown = set(declared) - set(features)
    if unknown:
        raise ConfigError(
            "mlplat.toml",
            f"monitor.features.{sorted(unknown)[0]}",
            f"one of the model's features ({', '.join(list(features)[:8])}...)",
        )
    described_outputs = {}
    for name, values in (outputs or {}).items():
        ref = output_reference(name, values, rng=rng)
        if ref is not None:
            described_outputs[name] = ref
    return Reference(
        n_rows=n_rows, window_sizes=list(window_sizes), features=features, outputs=described_outputs
    )


def _names_for(
    tensor: str,
    width: int,
    feature_names: Sequence[str] | Mapping[str, Sequence[str]] | None,
    single: bool,
) -> list[str]:
    if width == 0:
        return [tensor]
    given: Sequence[str] | None
    if isinstance(feature_names, Mapping):
        given = feature_names.get(tensor)
    else:
        given = feature_names if single else None
    if given is None:
        return [default_feature_name(tensor, i, single_input=single) for i in range(width)]
    if len(given) != width:
        raise ValueError(f"input '{tensor}' has {width} columns but {len(given)} feature names were given")
    return [str(n) for n in given]
