"""Collect a sweep's stored results into one flat row per run.

Columns per run: configuration axes (``batch_size``, ``lr_rule``, ``accumulate``, ``seed``),
training metrics from ``final.json`` (epoch chosen on validation), and analysis
measures read from ``analysis.h5`` whose provenance names the run's current best
checkpoint (content hash): stale results of an older checkpoint are never used. The same
holds for 2D surfaces (attribute ``checkpoint``) and 1D interpolations (both endpoints,
``checkpoint_a``/``checkpoint_b``, must be the current best or last checkpoint of runs of
the sweep); files of other checkpoints are skipped and listed in ``SweepData.skipped``.

Every stored setting of a measure is collected (``RunRecord.candidates``); one setting per
measure is then chosen over the runs (:mod:`landscape.report.settings`: the one setting
common to every finished run, narrowed by ``--samples`` / ``--setting``). A measure whose
runs were analysed with different settings is not compared: ``SweepData.not_compared``
holds one line naming the runs, the settings and the option to choose; ``SweepData.choices``
the setting used per measure. Non-finite values (and correlations outside [-1, 1]) are
left out of every mean and listed in ``SweepData.invalid``, the run named.

Measure columns (``MEASURES``): ``hessian_lambda_max`` (top algebraic eigenvalue),
``hessian_trace``, ``keskar_<space>_eps<eps>`` (phi, percent), ``adaptive_<norm>``
(worst-case adaptive sharpness at the reference rho, loss units), ``average`` (average-
case sharpness at the reference rho), ``pacbayes_flatness`` (1/sigma^2),
``noise_b_simple`` (examples). ``<col>_se`` holds a standard error of the value where one
exists (Keskar: of the mean over starts); ``hessian_lambda_max_residual`` the Lanczos residual
norm ``||H v - lambda v||`` (a bound on the eigenvalue error, not a standard error). The
training throughput spread stays ``samples_per_s_std`` (a standard deviation over epochs).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from landscape.errors import LandscapeError
from landscape.models.checkpoint import load_checkpoint
from landscape.report.settings import (
    Candidate,
    Choice,
    SettingFilter,
    check_filters,
    choose,
    hessian_settings,
    sharpness_settings,
)
from landscape.store import check_json_types, read_json, read_jsonl
from landscape.train.sweep import MANIFEST, distinct_runs, manifest_run_names

REFERENCE_RHO = {"linf": 2e-3, "l2": 1.0, "average": 0.1}
HESSIAN_MEASURES = {"topk": "hessian_lambda_max", "trace": "hessian_trace", "density": "hessian_density"}
DENSITY = "_density"          # candidate value key of a spectral density (a figure, not a column)
SHARPNESS_FAMILIES = ("keskar", "adaptive", "average", "pacbayes", "noise")
AXES = ("batch_size", "lr_rule", "accumulate")
TRAIN_COLUMNS = ("epochs_run", "train_srcc", "val_srcc", "test_srcc", "train_plcc", "val_plcc", "test_plcc",
                 "srcc_gap", "samples_per_s", "epoch_time_s", "peak_memory_mib")


@dataclass
class RunRecord:
    name: str
    path: Path
    status: str
    row: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    density: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)   # measure -> stored results


@dataclass
class SweepData:
    root: Path
    runs: list[RunRecord]
    measures: list[str]
    cross_names: list[str]
    plan: dict | None
    interpolations: list[Any]
    surfaces: dict[str, Any]
    missing: list[str]
    skipped: list[str] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)     # per measure: the setting used or why not compared
    not_compared: list[str] = field(default_factory=list)   # one line per measure left out (mixed settings)
    invalid: list[str] = field(default_factory=list)        # values left out of means (non-finite, impossible)


def _created(prov: Mapping[str, Any]) -> str:
    return str(prov.get("created_utc", ""))


def _hessian_candidates(h5: Path, checkpoint_hash: str) -> dict[str, list[Candidate]]:
    """Measure -> every stored Hessian result of this checkpoint (whole model), any setting."""
    from landscape.hessian.storage import hessian_results

    out: dict[str, list[Candidate]] = {}
    for part, measure in HESSIAN_MEASURES.items():
        for res, _key, prov in hessian_results(h5, part):
            if prov.get("checkpoint_hash") != checkpoint_hash:
                continue
            if part == "topk":
                values = {"hessian_lambda_max": float(res.eigenvalues[0]),
                          "hessian_lambda_max_residual": float(res.residuals[0]),   # ||Hv - lambda v||: a bound
                          "hessian_eigenvalues": [float(v) for v in res.eigenvalues]}
            elif part == "trace":
                values = {"hessian_trace": float(res.trace), "hessian_trace_se": float(res.stderr)}
            else:
                values = {DENSITY: {"grid": res.grid, "density": res.density, "sigma": res.sigma}}
            out.setdefault(measure, []).append(Candidate(hessian_settings(prov), _created(prov), values))
    return out


def _sharpness_values(m: str, r: dict) -> tuple[str, dict[str, Any]]:
    """The report measure of a sharpness record and its row values."""
    from landscape.sharpness.keskar import keskar_phi_se

    if m == "keskar":
        col = f"keskar_{r['space']}_eps{r['eps']:g}"
        values = {col: float(r["phi"])}
        starts = r.get("phi_per_start") or []
        if len(starts) > 1:
            values[col + "_se"] = keskar_phi_se(starts)   # standard error of the mean over starts
        return col, values
    if m == "adaptive":
        col = f"adaptive_{r['norm']}"
        return col, {col: float(r["sharpness"]), col + "_se": float(r["sharpness_se"]), col + "_rho": float(r["rho"])}
    if m == "average":
        return "average", {"average": float(r["sharpness"]), "average_se": float(r["sharpness_se"]),
                           "average_rho": float(r["rho"])}
    if m == "pacbayes":
        return "pacbayes_flatness", {"pacbayes_flatness": float(r["flatness"]),
                                     "pacbayes_flatness_se": float(r["flatness_se"])}
    return "noise_b_simple", {"noise_b_simple": float(r["b_simple"]), "noise_b_simple_se": float(r["b_simple_se"])}


def _sharpness_candidates(h5: Path, checkpoint_hash: str) -> dict[str, list[Candidate]]:
    """Measure -> every stored sharpness record of this checkpoint, any setting."""
    from landscape.sharpness import load_sharpness

    out: dict[str, list[Candidate]] = {}
    for m, records in (load_sharpness(h5) if h5.exists() else {}).items():
        if m not in SHARPNESS_FAMILIES:
            continue
        for r in records:
            prov = r.get("provenance") or {}
            if isinstance(prov, str):
                prov = json.loads(prov)
            if prov.get("checkpoint_hash") != checkpoint_hash:
                continue
            measure, values = _sharpness_values(m, r)
            out.setdefault(measure, []).append(Candidate(sharpness_settings({**r, "provenance": prov}),
                                                         _created(prov), values))
    return out


def family_of(measure: str) -> str:
    """``hessian``, ``keskar``, ``adaptive``, ... of a report measure."""
    return "hessian" if measure.startswith("hessian") else measure.split("_")[0]


def _invalid(name: str, col: str, value: Any) -> str | None:
    """Why ``value`` of ``col`` cannot enter a mean (non-finite, or a correlation outside [-1, 1]), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"{name}: non-finite {col} ({value})"
    bound = 2.0 if col == "srcc_gap" else 1.0 if col.endswith(("_srcc", "_plcc", "_krcc")) else None
    if bound is not None and abs(value) > bound:
        return f"{name}: {col} = {value:g} is outside [-{bound:g}, {bound:g}]"
    return None


def collect_run(run_dir: Path, invalid: list[str] | None = None) -> RunRecord:
    """One run's row (training metrics), its stored analyses (``candidates``, every setting) and its
    missing analyses. Invalid training metrics (:func:`_invalid`) become NaN and are listed in ``invalid``.
    The measure columns are filled by :func:`collect_sweep`, which picks one setting per measure."""
    invalid = [] if invalid is None else invalid
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json", require={"batch_size": int, "lr_rule": str, "accumulate": int,
                                                      "seed": int})
    row: dict[str, Any] = {"run": run_dir.name, **{k: cfg[k] for k in (*AXES, "seed")},
                           "run_lr": cfg.get("run_lr"), "world_size": cfg.get("world_size", 1)}
    final_path = run_dir / "final.json"
    rec = RunRecord(run_dir.name, run_dir, "not trained", row)
    if not final_path.exists():
        rec.missing.append("training (no final.json)")
        return rec
    final = read_json(final_path, require={"status": str})
    rec.status = final["status"]
    m = check_json_types(final_path, final, {"metrics": dict})["metrics"] if "metrics" in final else {}
    for k, v in m.items():
        if isinstance(v, (int, float)):
            why = _invalid(run_dir.name, k, v)
            row[k] = v if why is None else float("nan")     # left out of every mean and correlation
            if why is not None:
                invalid.append(why)
    if "peak_memory_bytes" in m:
        check_json_types(final_path, m, {"peak_memory_bytes": (int, float)}, "metrics")
        row["peak_memory_mib"] = m["peak_memory_bytes"] / 2 ** 20
    log = run_dir / "log.jsonl"
    if log.exists():
        rec.history = read_jsonl(log)
    best = run_dir / "best.pt"
    if not best.exists():
        rec.missing.append("checkpoint best.pt")
        return rec
    ckpt_hash = load_checkpoint(best, verify=False).content_hash
    row["checkpoint_hash"] = ckpt_hash
    h5 = run_dir / "analysis.h5"
    rec.candidates = {**_hessian_candidates(h5, ckpt_hash), **_sharpness_candidates(h5, ckpt_hash)}
    for part, measure in HESSIAN_MEASURES.items():
        if measure not in rec.candidates:
            rec.missing.append(f"hessian {part}")
    for fam in SHARPNESS_FAMILIES:
        if not any(family_of(k) == fam for k in rec.candidates):
            rec.missing.append(f"sharpness {fam}")
    return rec


def choose_settings(runs: Sequence[RunRecord], filters: Sequence[SettingFilter] = ()) -> tuple[list[Choice], list[str]]:
    """One setting per measure over the runs (:func:`landscape.report.settings.choose`); fills the rows
    (and densities) of the runs that have it. Returns the choices and the invalid measure values."""
    measures: list[str] = []
    seen: dict[tuple[str, str], set[str]] = {}
    for rec in runs:
        for measure, cands in rec.candidates.items():
            if measure not in measures:
                measures.append(measure)
            seen.setdefault((family_of(measure), measure), set()).update(k for c in cands for k in c.settings)
    check_filters(filters, seen)
    finished = [r.name for r in runs if r.status == "finished"]
    choices, invalid = [], []
    by_name = {r.name: r for r in runs}
    for measure in measures:
        fam = family_of(measure)
        pick = ("rho", REFERENCE_RHO["average" if fam == "average" else measure.split("_")[-1]]) \
            if fam in ("adaptive", "average") else None
        choice = choose(fam, measure, {r.name: r.candidates.get(measure, []) for r in runs}, filters, pick, finished)
        choices.append(choice)
        for run, why in choice.lacking.items():
            by_name[run].missing.append(f"{measure} ({why})")
        for run in choice.runs:
            rec = by_name[run]
            cand = next(c for c in rec.candidates[measure] if c.key == choice.key)
            for col, value in cand.values.items():
                if col == DENSITY:
                    rec.density = value
                    continue
                rec.row[col] = value
                why = _invalid(run, col, value) if _is_measure(col) else None
                if why is not None:
                    invalid.append(why)
    return choices, invalid


def _load_slices(paths: list[Path]) -> list[Any]:
    from landscape.surface import load_surface

    out = []
    for p in sorted(paths):
        if ".shard" in p.name:
            continue
        try:
            out.append(load_surface(p))
        except LandscapeError:
            continue
    return out


def _checkpoint_hashes(runs: list[RunRecord]) -> set[str]:
    """Content hashes of the runs' current ``best.pt`` and ``last.pt``."""
    out = {r.row["checkpoint_hash"] for r in runs if "checkpoint_hash" in r.row}
    for r in runs:
        last = r.path / "last.pt"
        if last.is_file():
            out.add(load_checkpoint(last, verify=False).content_hash)
    return out


def collect_sweep(root: Path, filters: Sequence[SettingFilter] = ()) -> SweepData:
    """Read every run of a sweep folder (raise if it is not one); one setting per measure (``filters``:
    the user's ``--samples`` / ``--setting``); measures analysed with mixed settings are not compared."""
    root = Path(root)
    manifest = root / MANIFEST
    if not manifest.exists():
        raise LandscapeError(f"{root}: not a sweep folder (no {MANIFEST})")
    def linked(path: Path, first: Path) -> None:
        warnings.warn(f"{path}: the same run folder as {first.name} (a link): counted once")
    # one run reached under two names (a symlink) counts once
    names = [p.name for p in distinct_runs([root / n for n in manifest_run_names(manifest)], linked)]
    invalid: list[str] = []
    runs = [collect_run(root / n, invalid) if (root / n / "config.json").exists()
            else RunRecord(n, root / n, "not started", {"run": n}, missing=["training (not started)"])
            for n in names]
    choices, bad_values = choose_settings(runs, filters)
    invalid += bad_values
    measures = []
    for rec in runs:
        for k in rec.row:
            if _is_measure(k) and k not in measures:
                measures.append(k)
    cross = sorted({k[:-5] for rec in runs for k in rec.row if k.startswith("cross") and k.endswith("_srcc")})
    plan_path = root / "plan" / "plan.json"
    plan = read_json(plan_path) if plan_path.exists() else None
    skipped: list[str] = []
    surfaces = {}
    for rec in runs:
        if not rec.path.exists():
            continue
        current = rec.row.get("checkpoint_hash")
        surfaces[rec.name] = []
        for s in _load_slices(list(rec.path.glob("surface-*.h5"))):
            if current is not None and s.attrs.get("checkpoint") == current:
                surfaces[rec.name].append(s)
            else:
                skipped.append(f"{s.path}: made from checkpoint {str(s.attrs.get('checkpoint'))[:12]}, "
                               f"not the run's best.pt")
    missing = [f"{rec.name}: {what}" for rec in runs for what in rec.missing]
    if not any(surfaces.values()):
        missing.append("2D surfaces: none stored (landscape analyze surface)")
    interps = _load_slices(list(root.glob("interpolate-*.h5")))
    if interps:
        known = _checkpoint_hashes(runs)
        ok = [{s.attrs.get("checkpoint_a"), s.attrs.get("checkpoint_b")} <= known for s in interps]
        skipped += [f"{s.path}: an endpoint is no current checkpoint of this sweep"
                    for s, good in zip(interps, ok) if not good]
        interps = [s for s, good in zip(interps, ok) if good]
    if not interps:
        missing.append("1D interpolation: none stored (landscape analyze interpolate)")
    if plan is None:
        missing.append("plan: none stored (landscape plan --out SWEEP/plan)")
    not_compared = [c.reason for c in choices if c.reason]
    return SweepData(root, runs, measures, cross, plan, interps, surfaces, missing, skipped, choices,
                     not_compared, invalid)


_MEASURE_PREFIXES = ("hessian_lambda_max", "hessian_trace", "keskar_", "adaptive_", "average", "pacbayes_flatness",
                     "noise_b_simple")


def _is_measure(col: str) -> bool:
    return (col.startswith(_MEASURE_PREFIXES) and not col.endswith(("_se", "_rho", "_residual"))
            and col != "hessian_eigenvalues")
