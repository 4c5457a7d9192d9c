"""Import a checkpoint trained elsewhere as a run folder that ``analyze`` and ``report`` accept.

``import_run(weights, SWEEP/NAME, ...)`` writes the same files a trained run has:

- ``config.json``: the protocol (dataset, score column, split seed, test crops, training
  loss ``ranking_alpha``/``ranking_margin``), the declared ``batch_size``, ``seed``, ``lr``
  (``run_lr``), ``lr_rule = "imported"``, ``accumulate = 1``, ``world_size = 1``, ``labels``
  and ``imported``: the source file and its sha256, the wrapper entries and key prefixes
  that were unwrapped, the model description (factory path, function and source sha256,
  or timm name and arguments), the score range and where it came from;
- ``dataset.json``: the dataset identity (as for a trained run; ``config.json``'s ``dataset`` and
  the sweep manifest's hold the resolved absolute root);
- ``best.pt``: a :mod:`landscape.models.checkpoint` file whose ``model_config`` is the
  imported model's description (:mod:`landscape.models.imported`), so every analysis
  rebuilds the model from the file alone (a factory whose source changed is refused);
- ``final.json``: ``status = "finished"`` and train/val/test SRCC/PLCC/KRCC measured with
  the toolkit's test protocol (:func:`landscape.train.pipeline.predict`: each image the mean
  of the model over ``test_patches`` crops -- a fixed uniform grid, or seeded random crops
  with ``test_random_crop``, seed 0 -- of ``img_size`` px; ``train`` is the fixed training
  subset of ``train_eval_images`` images, seed 0, the same as for trained runs) and
  ``srcc_gap = train_srcc - test_srcc``. No training history (``epochs_run = 0``).

The run is appended to ``SWEEP/sweep.json`` (created if missing) under the manifest's lock.

Output scale: the model's outputs are in the declared score range ``[lo, hi]`` and are
mapped to ``(g - lo) / (hi - lo)`` (the trainer's normalisation of targets). The import
refuses a range inconsistent with the outputs: with ``p`` the normalised predictions and
``t`` the normalised targets over all evaluation images, it needs
``|median(p) - median(t)| <= 0.5`` (half the range width) and
``0.1 <= IQR(p) / IQR(t) <= 10``; a wrong range (0..1 outputs declared as 1:5, 1..5
outputs declared as 0:100) fails one of them, a fitted model passes both.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from landscape.data.loading import absolute_spec
from landscape.errors import CheckpointError, LandscapeError, check_positive_int
from landscape.metrics import iqa_scores
from landscape.models.checkpoint import save_checkpoint
from landscape.models.weights import ImportedModel, import_model
from landscape.provenance import provenance, sha256_file
from landscape.store import exclusive, read_json, write_json
from landscape.train import pipeline
from landscape.train.config import TrainConfig
from landscape.train.sweep import KIND, MANIFEST

LR_RULE = "imported"
PROTOCOL_KEYS = ("dataset", "score_column", "split_seed", "test_patches", "test_random_crop", "train_eval_images",
                 "loss", "ranking_alpha", "ranking_margin", "cross_test", "skip_bad_images")
MAX_LOCATION, SPREAD_RANGE = 0.5, (0.1, 10.0)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_score_range(text: str | None) -> tuple[float, float] | None:
    """``"LO:HI"`` -> ``(lo, hi)`` with ``lo < hi``; ``None`` stays ``None``."""
    if text is None:
        return None
    parts = str(text).split(":")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise LandscapeError(f"--score-range {text!r}: expected LO:HI, e.g. 1:5") from None
    if not hi > lo:
        raise LandscapeError(f"--score-range {text!r}: need LO < HI")
    return lo, hi


def parse_labels(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` -> dict (one-line error for an item without ``=``)."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise LandscapeError(f"--label {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def check_scale(pred: np.ndarray, target: np.ndarray, score_range: tuple[float, float]) -> dict[str, float]:
    """Refuse normalised predictions inconsistent with the normalised targets (module docstring)."""
    pred, target = np.asarray(pred, float), np.asarray(target, float)
    lo, hi = score_range
    if not np.all(np.isfinite(pred)):
        raise CheckpointError(f"imported model gives {int((~np.isfinite(pred)).sum())} non-finite predictions")

    def iqr(v):
        q75, q25 = np.percentile(v, [75, 25])
        return float(q75 - q25)

    loc = float(np.median(pred) - np.median(target))
    ratio = iqr(pred) / iqr(target) if iqr(target) > 0 else float("nan")
    stats = {"median_offset": loc, "iqr_ratio": ratio}
    raw = pred * (hi - lo) + lo
    if abs(loc) > MAX_LOCATION or not (SPREAD_RANGE[0] <= ratio <= SPREAD_RANGE[1]):
        raise CheckpointError(
            f"--score-range {lo:g}:{hi:g} does not fit the model's outputs (median {np.median(raw):.4g}, "
            f"5-95% {np.percentile(raw, 5):.4g}..{np.percentile(raw, 95):.4g}): normalised, their median is "
            f"{loc:+.2f} from the targets' (limit {MAX_LOCATION}) and their spread {ratio:.3g}x the targets' "
            f"(limits {SPREAD_RANGE[0]:g}..{SPREAD_RANGE[1]:g}); declare the range the outputs are in")
    return stats


def protocol_config(dataset: str, overrides: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of the evaluation protocol (``overrides`` among :data:`PROTOCOL_KEYS`,
    ``device``, ``workers``, ``amp``; the rest at the training defaults)."""
    bad = sorted(set(overrides) - set(PROTOCOL_KEYS) - {"device", "workers", "amp", "dataset"})
    if bad:
        raise LandscapeError(f"import: unknown protocol option(s): {', '.join(bad)}")
    cfg = TrainConfig(**{**overrides, "dataset": dataset})
    if not cfg.dataset or ":" not in cfg.dataset:
        raise LandscapeError(f"--dataset must be FORMAT:ROOT, got '{dataset}'")
    return cfg


def _add_to_sweep(sweep: Path, entry: dict[str, Any], protocol: dict[str, Any]) -> None:
    """Append (or replace, by name) a run in ``sweep/sweep.json``, under its lock."""
    manifest = sweep / MANIFEST
    with exclusive(manifest):
        if manifest.exists():
            data = read_json(manifest)
            if data.get("kind") != KIND:
                raise LandscapeError(f"{manifest}: not a landscape sweep manifest")
            theirs = data.get("config", {}).get("dataset")
            if theirs and ":" in theirs:
                theirs = absolute_spec(theirs)          # older manifests hold the root as typed
            if theirs != protocol["dataset"]:
                raise LandscapeError(f"{sweep}: sweep is on dataset {theirs}, not {protocol['dataset']}; "
                                     f"import into another sweep folder")
            runs = [r for r in data["runs"] if r["name"] != entry["name"]]
        else:
            data = {"kind": KIND, "config": {"source": "import", **protocol}, "provenance": provenance()}
            runs = []
        runs.append({**entry, "index": len(runs)})
        data["runs"] = runs
        write_json(manifest, data)


def run_name_ok(name: str) -> str:
    if not _NAME.match(name):
        raise LandscapeError(f"run name {name!r}: use letters, digits, '.', '_' and '-' (no leading symbol)")
    return name


def import_run(weights: str | Path, out: str | Path, *, dataset: str, batch_size: int, seed: int = 0,
               lr: float | None = None, factory: str | None = None, timm_name: str | None = None,
               img_size: int | None = None, score_range: tuple[float, float] | str | None = None,
               labels: dict[str, str] | None = None, timm_kwargs: dict[str, Any] | None = None,
               force: bool = False, data: pipeline.RunData | None = None, **protocol: Any) -> dict[str, Any]:
    """Import ``weights`` into the run folder ``out`` (= ``SWEEP/NAME``); returns ``final.json``'s metrics.

    ``protocol``: overrides of the evaluation protocol among :data:`PROTOCOL_KEYS` (defaults
    as for training: 4 grid crops per image, 256 training images), plus ``device``/``workers``.
    An existing run folder of the same source file (sha256) is kept as is; of another,
    it is refused unless ``force``.
    """
    from landscape.device import resolve_device

    out = Path(out)
    name = run_name_ok(out.name)
    check_positive_int("--batch-size", batch_size)
    if lr is not None and not (0 < float(lr) < float("inf")):
        raise LandscapeError(f"--lr {lr!r}: need a positive number")
    if isinstance(score_range, str):
        score_range = parse_score_range(score_range)
    cfg = protocol_config(dataset, protocol)
    if (out / "final.json").exists() and not force:
        old = read_json(out / "config.json").get("imported", {}) if (out / "config.json").exists() else {}
        if old.get("source_sha256") and old["source_sha256"] == _sha(weights):
            return read_json(out / "final.json").get("metrics", {})
        raise LandscapeError(f"{out}: holds another run; use another NAME or --force to replace it")
    # the evaluation sets a trained run with this protocol has (cfg.model, a preset, sizes training patches only)
    data = data or pipeline.load_run_data(cfg)
    lo_hi = tuple(data.dataset.score_range)
    imp = import_model(weights, factory=factory, timm_name=timm_name, img_size=img_size, score_range=score_range,
                       default_score_range=lo_hi, timm_kwargs=timm_kwargs)
    device = resolve_device(cfg.device)
    model = imp.model.to(device)
    metrics, preds, targets = {}, [], []
    for set_name, es in data.eval_sets.items():
        pred, score = pipeline.predict(model, es, cfg, device, batch_size)
        metrics[set_name] = iqa_scores(pred, score).as_dict()
        preds.append(pred)
        targets.append(pipeline.normalise(np.asarray(score, float), lo_hi))
    scale = check_scale(np.concatenate(preds), np.concatenate(targets), imp.model.config.score_range)
    final = {"selected_epoch": 0, "epochs_run": 0, "selection": "imported"}
    for split in ("train", "val", "test", *data.cross_names):
        for metric in ("srcc", "plcc", "krcc"):
            final[f"{split}_{metric}"] = metrics[split][metric]
    final["srcc_gap"] = metrics["train"]["srcc"] - metrics["test"]["srcc"]
    for cname in data.cross_names:
        final[f"{cname}_drop"] = metrics["test"]["srcc"] - metrics[cname]["srcc"]
    record = _record(imp, scale)
    protocol_cfg = {**{k: getattr(cfg, k) for k in PROTOCOL_KEYS}, "dataset": data.dataset.spec}
    rcfg = {**protocol_cfg, "model": f"imported:{imp.description['family']}", "run": name,
            "batch_size": int(batch_size), "seed": int(seed), "lr": lr, "run_lr": lr, "lr_rule": LR_RULE,
            "accumulate": 1, "world_size": 1, "per_rank_batch": int(batch_size), "micro_batch": int(batch_size),
            "effective_batch": int(batch_size), "labels": dict(labels or {}), "imported": record,
            "test_crops": f"{cfg.test_patches} {'seeded random' if cfg.test_random_crop else 'grid'} crops of "
                          f"{imp.model.config.img_size} px per image (seed 0), mean prediction"}
    if force and out.exists():
        for stale in ("final.json", "best.pt", "last.pt", "analysis.h5"):
            (out / stale).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**rcfg, "provenance": provenance()})
    write_json(out / "dataset.json", data.identity)
    meta = {"run": name, "config": rcfg, "dataset": data.identity, "epoch": 0, "kind": "best",
            "metrics": {"epoch": 0, **metrics}, "imported": record}
    save_checkpoint(out / "best.pt", imp.model, imp.description, meta)
    write_json(out / "final.json", {"status": "finished", "message": f"imported from {imp.weights.path}",
                                    "metrics": final, "provenance": provenance(run=name)})
    _add_to_sweep(out.parent, {"name": name, "batch_size": int(batch_size), "seed": int(seed), "lr_rule": LR_RULE,
                               "accumulate": 1, "imported": True}, protocol_cfg)
    return final


def _sha(path: str | Path) -> str | None:
    return sha256_file(path) if Path(path).is_file() else None


def _record(imp: ImportedModel, scale: dict[str, float]) -> dict[str, Any]:
    w = imp.weights
    return {"source": str(w.path.resolve()), "source_sha256": w.sha256, "wrapper": w.wrapper,
            "stripped_prefixes": imp.stripped, "model": imp.description,
            "score_range": list(imp.model.config.score_range), "score_range_source": imp.score_range_source,
            "scale_check": scale}
