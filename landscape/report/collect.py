"""Collect a sweep's stored results into one flat row per run.

Columns per run: configuration axes (``batch_size``, ``lr_rule``, ``accumulate``, ``seed``),
training metrics from ``final.json`` (epoch chosen on validation), and analysis
measures read from ``analysis.h5`` whose provenance names the run's current best
checkpoint (content hash): stale results of an older checkpoint are never used. The same
holds for 2D surfaces (attribute ``checkpoint``) and 1D interpolations (both endpoints,
``checkpoint_a``/``checkpoint_b``, must be the current best or last checkpoint of runs of
the sweep); files of other checkpoints are skipped and listed in ``SweepData.skipped``.

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
from typing import Any

from landscape.errors import LandscapeError
from landscape.models.checkpoint import load_checkpoint
from landscape.store import check_json_types, read_json, read_jsonl
from landscape.train.sweep import MANIFEST, manifest_run_names

REFERENCE_RHO = {"linf": 2e-3, "l2": 1.0, "average": 0.1}
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


def _nearest(items: list[dict], key: str, target: float) -> dict | None:
    if not items:
        return None
    return min(items, key=lambda d: abs(math.log(d[key] / target)) if d[key] > 0 else math.inf)


def _current(records: list[dict], checkpoint_hash: str) -> list[dict]:
    """Records whose provenance names this checkpoint hash, oldest first (the newest wins)."""
    out = []
    for r in records:
        prov = r.get("provenance") or {}
        if isinstance(prov, str):
            prov = json.loads(prov)
        if prov.get("checkpoint_hash") == checkpoint_hash:
            out.append((str(prov.get("created_utc", "")), r))
    return [r for _, r in sorted(out, key=lambda t: t[0])]


def _hessian_columns(h5: Path, checkpoint_hash: str, row: dict, rec: RunRecord) -> None:
    from landscape.hessian import load_hessian_result

    for part in ("topk", "trace", "density"):
        got = load_hessian_result(h5, part) if h5.exists() else None
        if got is None or got[2].get("checkpoint_hash") != checkpoint_hash:
            rec.missing.append(f"hessian {part}")
            continue
        res = got[0]
        if part == "topk":
            row["hessian_lambda_max"] = float(res.eigenvalues[0])
            row["hessian_lambda_max_residual"] = float(res.residuals[0])   # ||Hv - lambda v||: an error bound, no SE
            row["hessian_eigenvalues"] = [float(v) for v in res.eigenvalues]
        elif part == "trace":
            row["hessian_trace"], row["hessian_trace_se"] = float(res.trace), float(res.stderr)
        else:
            rec.density = {"grid": res.grid, "density": res.density, "sigma": res.sigma}


def _sharpness_columns(h5: Path, checkpoint_hash: str, row: dict, rec: RunRecord) -> None:
    from landscape.sharpness import load_sharpness
    from landscape.sharpness.keskar import keskar_phi_se

    stored = load_sharpness(h5) if h5.exists() else {}
    parts = {m: _current(v, checkpoint_hash) for m, v in stored.items()}
    for r in parts.get("keskar", []):
        col = f"keskar_{r['space']}_eps{r['eps']:g}"
        row[col] = float(r["phi"])
        starts = r.get("phi_per_start") or []
        if len(starts) > 1:
            row[col + "_se"] = keskar_phi_se(starts)   # standard error of the mean over starts
    for norm in ("linf", "l2"):
        pick = _nearest([r for r in parts.get("adaptive", []) if r["norm"] == norm], "rho", REFERENCE_RHO[norm])
        if pick:
            row[f"adaptive_{norm}"], row[f"adaptive_{norm}_se"] = float(pick["sharpness"]), float(pick["sharpness_se"])
            row[f"adaptive_{norm}_rho"] = float(pick["rho"])
    pick = _nearest(parts.get("average", []), "rho", REFERENCE_RHO["average"])
    if pick:
        row["average"], row["average_se"], row["average_rho"] = (float(pick["sharpness"]), float(pick["sharpness_se"]),
                                                                  float(pick["rho"]))
    if parts.get("pacbayes"):
        r = parts["pacbayes"][-1]
        row["pacbayes_flatness"], row["pacbayes_flatness_se"] = float(r["flatness"]), float(r["flatness_se"])
    if parts.get("noise"):
        r = parts["noise"][-1]
        row["noise_b_simple"], row["noise_b_simple_se"] = float(r["b_simple"]), float(r["b_simple_se"])
    for m in ("keskar", "adaptive", "average", "pacbayes", "noise"):
        if not parts.get(m):
            rec.missing.append(f"sharpness {m}")


def collect_run(run_dir: Path) -> RunRecord:
    """One run's row (training metrics + analysis measures) and its missing analyses."""
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
            row[k] = v
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
    _hessian_columns(h5, ckpt_hash, row, rec)
    _sharpness_columns(h5, ckpt_hash, row, rec)
    return rec


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


def collect_sweep(root: Path) -> SweepData:
    """Read every run of a sweep folder; raise if it is not one."""
    root = Path(root)
    manifest = root / MANIFEST
    if not manifest.exists():
        raise LandscapeError(f"{root}: not a sweep folder (no {MANIFEST})")
    names, seen = [], {}
    for n in manifest_run_names(manifest):
        real = (root / n).resolve()        # one run reached under two names (a symlink) counts once
        if real in seen:
            warnings.warn(f"{root / n}: the same run folder as {seen[real]} (a link): counted once")
            continue
        seen[real] = n
        names.append(n)
    runs = [collect_run(root / n) if (root / n / "config.json").exists()
            else RunRecord(n, root / n, "not started", {"run": n}, missing=["training (not started)"])
            for n in names]
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
    return SweepData(root, runs, measures, cross, plan, interps, surfaces, missing, skipped)


_MEASURE_PREFIXES = ("hessian_lambda_max", "hessian_trace", "keskar_", "adaptive_", "average", "pacbayes_flatness",
                     "noise_b_simple")


def _is_measure(col: str) -> bool:
    return (col.startswith(_MEASURE_PREFIXES) and not col.endswith(("_se", "_rho", "_residual"))
            and col != "hessian_eigenvalues")
