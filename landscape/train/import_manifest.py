"""Import a whole set of checkpoints listed in a manifest into one sweep folder.

Manifest: CSV with a header row, or YAML (a list of rows, or ``{"defaults": {...},
"runs": [...]}``). Row keys:

- ``path`` (required): the weights file, relative to the manifest's folder unless absolute;
- ``batch_size`` (required), ``seed`` (default 0), ``lr`` (optional);
- ``name``: run folder name (default ``bs{batch_size}_seed{seed}``; ``_{file stem}`` is
  appended when two rows would share it);
- ``factory`` / ``timm`` / ``img_size`` / ``score_range`` (``LO:HI``): override the
  command's model declaration for this row;
- ``labels``: a mapping (YAML) or ``key=value;key=value`` (CSV); every other CSV column
  is a label too.

Every row is checked before the first import; the dataset is loaded once for all rows.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from landscape.errors import LandscapeError
from landscape.train import pipeline
from landscape.train.imported_run import import_run, parse_labels, protocol_config, run_name_ok

ROW_KEYS = ("path", "name", "batch_size", "seed", "lr", "factory", "timm", "img_size", "score_range", "labels")


def _int(row: dict, key: str, where: str, default: int | None = None) -> int | None:
    value = row.get(key)
    if value in (None, ""):
        if default is None and key == "batch_size":
            raise LandscapeError(f"{where}: '{key}' is required")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LandscapeError(f"{where}: '{key}' must be an integer, got {value!r}") from None


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV/YAML manifest, normalised (paths resolved, labels as a dict)."""
    path = Path(path)
    if not path.is_file():
        raise LandscapeError(f"{path}: manifest not found")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            raw = [dict(r) for r in csv.DictReader(f)]
        defaults: dict[str, Any] = {}
    elif path.suffix.lower() in (".yaml", ".yml"):
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise LandscapeError(f"{path}: cannot parse manifest ({str(e).splitlines()[0]})") from None
        defaults = doc.get("defaults", {}) if isinstance(doc, dict) else {}
        raw = doc.get("runs") if isinstance(doc, dict) else doc
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            raise LandscapeError(f"{path}: manifest must be a list of rows (or a mapping with 'runs')")
    else:
        raise LandscapeError(f"{path}: manifest must be .csv, .yaml or .yml")
    if not raw:
        raise LandscapeError(f"{path}: manifest lists no checkpoints")
    rows = []
    for i, r in enumerate(raw, start=1):
        r = {**defaults, **{str(k).strip(): v for k, v in r.items()}}
        where = f"{path} row {i}"
        if not r.get("path"):
            raise LandscapeError(f"{where}: 'path' is required")
        labels = r.get("labels") or {}
        if isinstance(labels, str):
            labels = parse_labels([s for s in labels.split(";") if s.strip()])
        elif not isinstance(labels, dict):
            raise LandscapeError(f"{where}: 'labels' must be a mapping or key=value;key=value")
        extra = {k: str(v) for k, v in r.items() if k not in ROW_KEYS and v not in (None, "")}
        weights = Path(str(r["path"])).expanduser()
        weights = weights if weights.is_absolute() else path.parent / weights
        lr = r.get("lr")
        rows.append({"path": weights, "name": r.get("name") or None,
                     "batch_size": _int(r, "batch_size", where), "seed": _int(r, "seed", where, 0),
                     "lr": float(lr) if lr not in (None, "") else None,
                     "factory": r.get("factory") or None, "timm": r.get("timm") or None,
                     "img_size": _int(r, "img_size", where, 0) or None,
                     "score_range": str(r["score_range"]) if r.get("score_range") not in (None, "") else None,
                     "labels": {**extra, **{str(k): str(v) for k, v in labels.items()}}})
    _name_rows(rows)
    return rows


def _name_rows(rows: list[dict[str, Any]]) -> None:
    default = [f"bs{r['batch_size']}_seed{r['seed']}" for r in rows]
    for r, d in zip(rows, default):
        if r["name"] is None:
            r["name"] = d if default.count(d) == 1 else f"{d}_{Path(r['path']).stem}"
        run_name_ok(str(r["name"]))
    names = [r["name"] for r in rows]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LandscapeError(f"manifest: run names used twice: {', '.join(dup)} (give each row a 'name')")


def import_manifest(manifest: str | Path, sweep: str | Path, *, dataset: str, factory: str | None = None,
                    timm_name: str | None = None, img_size: int | None = None, score_range: str | None = None,
                    labels: dict[str, str] | None = None, force: bool = False,
                    log=lambda m: None, **protocol: Any) -> dict[str, dict[str, Any]]:
    """Import every row of ``manifest`` into ``sweep/NAME``; returns ``{name: final metrics}``."""
    rows = read_manifest(manifest)
    for r in rows:
        if not r["path"].is_file():
            raise LandscapeError(f"{manifest}: {r['path']}: weights file not found")
        if not (r["factory"] or r["timm"] or factory or timm_name):
            raise LandscapeError(f"{manifest}: {r['name']}: declare --factory or --timm (or a factory/timm column)")
    cfg = protocol_config(dataset, protocol)
    data = pipeline.load_run_data(cfg)
    out = {}
    for i, r in enumerate(rows, start=1):
        own_model = r["factory"] or r["timm"]
        out[r["name"]] = import_run(
            r["path"], Path(sweep) / r["name"], dataset=dataset, batch_size=r["batch_size"], seed=r["seed"],
            lr=r["lr"], factory=r["factory"] if own_model else factory, timm_name=r["timm"] if own_model else timm_name,
            img_size=r["img_size"] or img_size, score_range=r["score_range"] or score_range,
            labels={**(labels or {}), **r["labels"]}, force=force, data=data, **protocol)
        m = out[r["name"]]
        log(f"[{i}/{len(rows)}] {r['name']}: train SRCC {m['train_srcc']:.4f} test SRCC {m['test_srcc']:.4f} "
            f"gap {m['srcc_gap']:+.4f}")
    return out
