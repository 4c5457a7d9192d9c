"""Run the sharpness measures on one model, store each finished part, resume, and load.

``analyze_sharpness`` runs, for the requested measures,

- ``keskar``: phi(eps, A) for each eps (default 1e-3, 5e-4) in the full space and a
  random 100-dimensional subspace;
- ``adaptive``: worst-case adaptive m-sharpness for l_inf (rho 5e-4 ... 8e-3) and
  l2 (rho 0.25 ... 4);
- ``average``: average-case adaptive sharpness (rho 0.025 ... 0.4);
- ``pacbayes``: magnitude-aware PAC-Bayes flatness;
- ``noise``: gradient noise scale B_simple,

each part (one measure at one eps/rho) keyed by ``content_key`` of its spec
(measure, full config incl. seed and mode, hash of the model's state dict, hash
of the data, criterion name). With ``h5_path`` every finished part is written
at once (atomically, ``store.update_h5``) to the group
``sharpness/<measure>/<key>``: scalar fields as attributes, list fields as
float64 datasets, plus attributes ``spec``, ``provenance`` (JSON) and
``complete``. A rerun loads the parts already stored and computes only the
rest. ``load_sharpness`` returns everything stored as plain dicts.

Data parallel (``batches`` a :class:`landscape.distributed.ShardedBatches` under
``torchrun``): every rank runs every part together (each on its shard); rank 0 reads
what is stored (and tells the others) and writes; the keys hash the global data, so they
equal the single-process keys.
"""
from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from torch import nn

from landscape import distributed as dist
from landscape.batches import Batch, Criterion
from landscape.errors import LandscapeError, check_positive_number
from landscape.params import check_finite_parameters
from landscape.provenance import content_key, hash_state
from landscape.provenance import provenance as make_provenance
from landscape.sharpness.adaptive import RHO_L2, RHO_LINF, AdaptiveConfig, AdaptiveResult, adaptive_sharpness
from landscape.sharpness.average import RHO_AVERAGE, AverageConfig, AverageResult, average_sharpness
from landscape.sharpness.keskar import KESKAR_EPS, KESKAR_SUBSPACE_DIM, KeskarConfig, KeskarResult, keskar_sharpness
from landscape.sharpness.noise_scale import NoiseScaleResult, gradient_noise_scale
from landscape.sharpness.objective import counting_evaluations, criterion_name, hash_batches, prepare
from landscape.sharpness.pacbayes import PacBayesConfig, PacBayesResult, pacbayes_flatness
from landscape.store import attrs_from_h5, attrs_to_h5, check_h5_fields, open_h5, update_h5

MEASURES = ("keskar", "adaptive", "average", "pacbayes", "noise")
KESKAR_SPACES = ("full", "random")
GROUP = "sharpness"
SPEC_VERSION = 1


@dataclass(frozen=True)
class NoiseConfig:
    """Settings of :func:`gradient_noise_scale` inside the suite."""

    b_small: int = 16
    b_big: int = 256
    n_repeats: int = 20
    chunk_size: int | None = None
    n_boot: int = 2000
    ci: float = 0.95
    seed: int = 0
    train: bool = False


RESULT_TYPES: dict[str, type] = {"keskar": KeskarResult, "adaptive": AdaptiveResult, "average": AverageResult,
                                 "pacbayes": PacBayesResult, "noise": NoiseScaleResult}


@dataclass
class SharpnessSuite:
    """All results of one :func:`analyze_sharpness` call; ``keys``: ``"measure/key"`` of each part, in order."""

    keskar: list[KeskarResult] = field(default_factory=list)
    adaptive: list[AdaptiveResult] = field(default_factory=list)
    average: list[AverageResult] = field(default_factory=list)
    pacbayes: PacBayesResult | None = None
    noise: NoiseScaleResult | None = None
    keys: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Part:
    """One unit of work: a measure at one setting."""

    measure: str
    config: Any

    @property
    def label(self) -> str:
        c = self.config
        if self.measure == "keskar":
            return f"keskar eps={c.eps:g} {'full' if c.subspace_dim is None else f'random p={c.subspace_dim}'}"
        if self.measure == "adaptive":
            return f"adaptive {c.norm} rho={c.rho:g}"
        if self.measure == "average":
            return f"average rho={c.rho:g}"
        if self.measure == "pacbayes":
            return f"pacbayes {c.kind} d={c.target:g}"
        return f"noise B={c.b_small},{c.b_big}"


def plan_parts(measures: Sequence[str] = MEASURES, *, eps: Sequence[float] = KESKAR_EPS,
               keskar_spaces: Sequence[str] = KESKAR_SPACES, subspace_dim: int = KESKAR_SUBSPACE_DIM,
               rho_linf: Sequence[float] = RHO_LINF, rho_l2: Sequence[float] = RHO_L2,
               rho_average: Sequence[float] = RHO_AVERAGE, keskar: KeskarConfig = KeskarConfig(),
               adaptive: AdaptiveConfig = AdaptiveConfig(), average: AverageConfig = AverageConfig(),
               pacbayes: PacBayesConfig = PacBayesConfig(), noise: NoiseConfig = NoiseConfig(),
               seed: int = 0, train: bool = False) -> list[Part]:
    """The list of parts for the measures and grids (validated: eps > 0, rho > 0, known names)."""
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise LandscapeError(f"unknown sharpness measure(s) {unknown}; choose from {', '.join(MEASURES)}")
    bad = [s for s in keskar_spaces if s not in KESKAR_SPACES]
    if bad:
        raise LandscapeError(f"unknown Keskar space(s) {bad}; choose from {', '.join(KESKAR_SPACES)}")
    common = {"seed": int(seed), "train": bool(train)}
    parts: list[Part] = []
    for m in MEASURES:
        if m not in measures:
            continue
        if m == "keskar":
            for e in eps:
                check_positive_number("eps", e)
                for space in keskar_spaces:
                    dim = None if space == "full" else subspace_dim
                    parts.append(Part(m, dataclasses.replace(keskar, eps=float(e), subspace_dim=dim, **common)))
        elif m == "adaptive":
            for norm, grid in (("linf", rho_linf), ("l2", rho_l2)):
                for r in grid:
                    check_positive_number("rho", r)
                    parts.append(Part(m, dataclasses.replace(adaptive, norm=norm, rho=float(r), **common)))
        elif m == "average":
            for r in rho_average:
                check_positive_number("rho", r)
                parts.append(Part(m, dataclasses.replace(average, rho=float(r), **common)))
        elif m == "pacbayes":
            parts.append(Part(m, dataclasses.replace(pacbayes, **common)))
        else:
            parts.append(Part(m, dataclasses.replace(noise, **common)))
    return parts


def run_part(model: nn.Module, criterion: Criterion, batches: Sequence[Batch], part: Part):
    """Compute one part (no storage)."""
    c = part.config
    if part.measure == "keskar":
        return keskar_sharpness(model, criterion, batches, c)
    if part.measure == "adaptive":
        return adaptive_sharpness(model, criterion, batches, c)
    if part.measure == "average":
        return average_sharpness(model, criterion, batches, c)
    if part.measure == "pacbayes":
        return pacbayes_flatness(model, criterion, batches, c)
    return gradient_noise_scale(model, criterion, batches, c.b_small, c.b_big, c.n_repeats, c.seed, train=c.train,
                                chunk_size=c.chunk_size, n_boot=c.n_boot, ci=c.ci)


def _list_fields(cls: type) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {f.name for f in dataclasses.fields(cls) if typing.get_origin(hints[f.name]) is list}


def write_result(group, result, extra: Mapping[str, Any]) -> None:
    """Scalars of ``result`` as attributes, its list fields as float64 datasets, plus ``extra`` attributes."""
    lists = _list_fields(type(result))
    scalars = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if f.name in lists:
            group.create_dataset(f.name, data=np.asarray(value, dtype=np.float64))
        else:
            scalars[f.name] = value
    attrs_to_h5(group, {**scalars, **extra})


def read_result(cls: type, group):
    """Inverse of :func:`write_result` for the dataclass ``cls``."""
    attrs = attrs_from_h5(group)
    lists = _list_fields(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in lists:
            raw = group[f.name][()] if f.name in group else None
            if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "biuf":
                raise LandscapeError(f"{group.file.filename}: {group.name}/{f.name} is not a numeric dataset; "
                                     f"delete the file to recompute")
            values[f.name] = np.asarray(raw, dtype=np.float64).tolist()
        elif f.name in attrs:
            values[f.name] = attrs[f.name]
    check_h5_fields(group.file.filename, group.name.lstrip("/"), cls, values)   # types of the scalars
    return cls(**values)


def _record(group) -> dict[str, Any]:
    rec = attrs_from_h5(group)
    for name, ds in group.items():
        rec[name] = np.asarray(ds[()]).tolist()
    return rec


def load_sharpness(h5_path: str | Path, measure: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Stored sharpness results as ``{measure: [record, ...]}``; a record is a plain dict of every field,
    ``spec`` and ``provenance`` (decoded), ``key`` and ``measure``. Incomplete groups are skipped."""
    out: dict[str, list[dict[str, Any]]] = {}
    with open_h5(h5_path) as f:
        root = f.get(GROUP)
        if root is None:
            return out
        for m in sorted(root):
            if measure is not None and m != measure:
                continue
            recs = [_record(root[m][k]) for k in root[m]]
            recs = [r for r in recs if r.get("complete")]
            for r in recs:
                if m in RESULT_TYPES:
                    check_h5_fields(h5_path, f"{GROUP}/{m}", RESULT_TYPES[m], r)
            recs.sort(key=lambda r: (str(r.get("space", r.get("norm", ""))), r.get("eps", r.get("rho", 0.0))))
            out[m] = recs
    return out


def _stored(h5_path: Path | None) -> dict[str, Any]:
    if h5_path is None or not Path(h5_path).exists():
        return {}
    out = {}
    with open_h5(h5_path) as f:
        root = f.get(GROUP)
        if root is None:
            return out
        for m in root:
            if m not in RESULT_TYPES:
                continue
            for k in root[m]:
                g = root[m][k]
                if g.attrs.get("complete", False):
                    out[f"{m}/{k}"] = read_result(RESULT_TYPES[m], g)
    return out


def analyze_sharpness(model: nn.Module, criterion: Criterion, batches: Iterable[Batch], *,
                      measures: Sequence[str] = MEASURES, eps: Sequence[float] = KESKAR_EPS,
                      keskar_spaces: Sequence[str] = KESKAR_SPACES, subspace_dim: int = KESKAR_SUBSPACE_DIM,
                      rho_linf: Sequence[float] = RHO_LINF, rho_l2: Sequence[float] = RHO_L2,
                      rho_average: Sequence[float] = RHO_AVERAGE, keskar: KeskarConfig = KeskarConfig(),
                      adaptive: AdaptiveConfig = AdaptiveConfig(), average: AverageConfig = AverageConfig(),
                      pacbayes: PacBayesConfig = PacBayesConfig(), noise: NoiseConfig = NoiseConfig(),
                      h5_path: str | Path | None = None, provenance: Mapping[str, Any] | None = None,
                      seed: int = 0, train: bool = False,
                      progress: Callable[[str], None] | None = None,
                      step_progress: Callable[[dict], None] | None = None) -> SharpnessSuite:
    """Run the requested measures over their grids; store and resume parts when ``h5_path`` is given.

    The config templates (``keskar=``, ``adaptive=`` ...) set everything but the
    grid value, ``seed`` and ``train``, which come from the arguments. Returns a
    :class:`SharpnessSuite` with every result (computed now or loaded). ``progress(message)``:
    one line per part (stored / done). ``step_progress(info)``: before each part and after the
    last, ``{"measure": part label (or "done"), "step": parts finished, "total": parts,
    "elapsed": s, "eta": s}`` with ``eta`` the parts left to compute at the mean time of the
    parts computed so far (NaN before the first).
    """
    parts = plan_parts(measures, eps=eps, keskar_spaces=keskar_spaces, subspace_dim=subspace_dim,
                       rho_linf=rho_linf, rho_l2=rho_l2, rho_average=rho_average, keskar=keskar,
                       adaptive=adaptive, average=average, pacbayes=pacbayes, noise=noise, seed=seed, train=train)
    data = prepare(model, batches)
    check_finite_parameters(model, "sharpness")
    identity = {"model": hash_state(model.state_dict()), "data": hash_batches(data),
                "criterion": criterion_name(criterion), "version": SPEC_VERSION}
    stored = dist.broadcast_object(_stored(Path(h5_path) if h5_path is not None and dist.is_main() else None))
    suite = SharpnessSuite()
    t0, spent, n_run = time.perf_counter(), 0.0, 0

    def report(step: int, label: str, evaluations: int | None = None) -> None:
        if step_progress is not None:
            left = len(parts) - step
            eta = spent / n_run * left if n_run else float("nan")
            info = {"measure": label, "step": step, "total": len(parts),
                    "elapsed": time.perf_counter() - t0, "eta": eta}
            if evaluations is not None:
                info["evaluations"] = evaluations
            step_progress(info)
    for step, part in enumerate(parts):
        report(step, part.label)
        spec = {"measure": part.measure, "config": asdict(part.config), **identity}
        path = f"{part.measure}/{content_key(spec)}"
        suite.keys.append(path)
        if path in stored:
            result = stored[path]
            suite.reused.append(path)
            if progress:
                progress(f"{part.label}: stored ({path})")
        else:
            started = time.perf_counter()
            with counting_evaluations(lambda n, step=step, label=part.label: report(step, label, n)):
                result = run_part(model, criterion, data, part)
            spent, n_run = spent + time.perf_counter() - started, n_run + 1
            suite.computed.append(path)
            if h5_path is not None and dist.is_main():
                # the caller's fields win (e.g. a richer ``criterion`` description); ours fill the gaps
                prov = make_provenance(**{"model_hash": identity["model"], "data_hash": identity["data"],
                                          "criterion": identity["criterion"], **dict(provenance or {})})
                with update_h5(h5_path) as f:
                    full = f"{GROUP}/{path}"
                    if full in f:
                        del f[full]
                    write_result(f.require_group(full), result,
                                 {"measure": part.measure, "key": path.split("/")[1], "label": part.label,
                                  "spec": spec, "provenance": prov, "complete": True})
            if progress:
                progress(f"{part.label}: done")
        if part.measure in ("pacbayes", "noise"):
            setattr(suite, part.measure, result)
        else:
            getattr(suite, part.measure).append(result)
    report(len(parts), "done")
    return suite


def summary_rows(suite: SharpnessSuite) -> list[dict[str, Any]]:
    """One row per part for a table: measure, setting, value, its standard error ``se``, unit, SRCC drop and its SE.

    Every ``se`` is a standard error of the value (Keskar: of the mean over starts,
    :attr:`KeskarResult.phi_se`; noise: the bootstrap SE), NaN where none exists."""
    rows = []
    for r in suite.keskar:
        rows.append({"measure": "keskar", "setting": f"eps={r.eps:g} {r.space} p={r.dim}", "value": r.phi,
                     "se": r.phi_se,
                     "unit": "percent", "srcc_drop": r.srcc_drop, "srcc_drop_se": float("nan")})
    for r in suite.adaptive:
        rows.append({"measure": "adaptive", "setting": f"{r.norm} rho={r.rho:g}", "value": r.sharpness,
                     "se": r.sharpness_se, "unit": "loss", "srcc_drop": r.srcc_drop, "srcc_drop_se": r.srcc_drop_se})
    for r in suite.average:
        rows.append({"measure": "average", "setting": f"rho={r.rho:g}", "value": r.sharpness, "se": r.sharpness_se,
                     "unit": "loss", "srcc_drop": r.srcc_drop, "srcc_drop_se": r.srcc_drop_se})
    if suite.pacbayes is not None:
        r = suite.pacbayes
        rows.append({"measure": "pacbayes", "setting": f"{r.kind} d={r.target:g}", "value": r.flatness,
                     "se": r.flatness_se, "unit": "1/sigma^2", "srcc_drop": r.srcc_drop, "srcc_drop_se": r.srcc_drop_se})
    if suite.noise is not None:
        r = suite.noise
        rows.append({"measure": "noise", "setting": f"B={r.b_small},{r.b_big} x{r.n_repeats}", "value": r.b_simple,
                     "se": r.b_simple_se, "unit": "examples", "srcc_drop": float("nan"), "srcc_drop_se": float("nan")})
    return rows
