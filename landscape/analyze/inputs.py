"""Load a trained run (or a checkpoint file) as analyzer input: model, criterion, fixed batches.

The analysis data of a subset is ``samples`` images drawn by a seeded permutation of
that split, one deterministic centre crop per image (sample = image, so SRCC over
samples is per-image SRCC), no augmentation, targets normalised to [0, 1] exactly
as in training. The criterion is the run's training loss (L1 + ranking with the
run's alpha and margin) unless ``loss`` names another.

Dataset: the run's record of its dataset (:meth:`landscape.data.records.IQADataset.identity`,
from the checkpoint's meta, else the run's ``dataset.json``) says which data the numbers
must be computed on. The dataset is taken from (:func:`resolve_dataset`), in this order:

1. ``dataset`` (``--dataset FORMAT:ROOT``), for a sweep or dataset moved elsewhere;
2. the recorded format and absolute root;
3. runs without a record: ``config.json``'s ``dataset``, a relative root resolved against
   the current directory (the rule those runs were trained under).

A root that does not exist stops with ``"<run>: dataset root <abs> not found; pass --dataset
FORMAT:ROOT"``. Whatever the source, the loaded dataset is verified against the record
(:func:`landscape.data.records.verify_identity`: format, score column, per-split counts and
hashes; the root may differ), so numbers are never computed on other data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from landscape.batches import Batch
from landscape.data.analysis import split_analysis_batches
from landscape.data.loading import absolute_spec, load_dataset_spec, parse_dataset_spec
from landscape.data.records import IQADataset, verify_identity
from landscape.device import resolve_device
from landscape.errors import LandscapeError
from landscape.models.checkpoint import Checkpoint, build_model, load_checkpoint
from landscape.params import check_finite_parameters
from landscape.provenance import hash_indices
from landscape.store import read_json
from landscape.train.losses import make_criterion

ANALYSIS_FILE = "analysis.h5"


@dataclass
class AnalysisInput:
    run_dir: Path
    checkpoint: Checkpoint
    model: nn.Module
    criterion: nn.Module
    batches: dict[str, list[Batch]]
    provenance: dict[str, Any] = field(default_factory=dict)
    dataset: IQADataset | None = None

    @property
    def analysis_path(self) -> Path:
        return self.run_dir / ANALYSIS_FILE


def resolve_checkpoint(path: str | Path, which: str = "best") -> tuple[Path, Path]:
    """``(run_dir, checkpoint_file)`` for a run folder (``best``/``last``/``epoch_NNN``) or a file."""
    path = Path(path)
    if path.is_file():
        return path.parent, path
    if not path.is_dir():
        raise LandscapeError(f"{path}: no such run folder or checkpoint file")
    ckpt = path / f"{which}.pt"
    if not ckpt.is_file():
        raise LandscapeError(f"{path}: run has no '{which}.pt' checkpoint (not trained yet?)")
    return path, ckpt


def recorded_identity(run_dir: Path, ckpt: Checkpoint) -> dict[str, Any] | None:
    """The dataset identity a checkpoint recorded (its meta), else its run's ``dataset.json``, else None."""
    meta = ckpt.meta.get("dataset")
    if isinstance(meta, dict) and meta:
        return meta
    path = Path(run_dir) / "dataset.json"
    return read_json(path) if path.is_file() else None


def resolve_dataset(source: str, dataset: str | None, recorded: dict[str, Any] | None,
                    config: dict[str, Any]) -> str:
    """``FORMAT:ROOT`` (absolute root) of the data to analyse ``source`` on (module docstring: the
    order is ``dataset``, the recorded absolute root, ``config.json``'s spec); a missing root is
    one :class:`LandscapeError` line naming the absolute root and ``--dataset``."""
    if dataset:
        spec, what = absolute_spec(dataset), f"--dataset {dataset}"
    elif recorded and recorded.get("format") and recorded.get("root"):
        spec, what = f"{recorded['format']}:{Path(recorded['root'])}", source
    elif config.get("dataset"):
        spec, what = absolute_spec(config["dataset"]), source
    else:
        raise LandscapeError(f"{source}: checkpoint does not name its dataset; pass --dataset FORMAT:ROOT")
    root = Path(parse_dataset_spec(spec)[1])
    if not root.exists():
        hint = "" if dataset else "; pass --dataset FORMAT:ROOT"
        raise LandscapeError(f"{what}: dataset root {root} not found{hint}")
    return spec


def load_analysis_input(path: str | Path, *, subsets: tuple[str, ...] = ("train",), samples: int = 256,
                        batch_size: int = 64, seed: int = 0, which: str = "best", device: str = "auto",
                        loss: str = "train", dataset: str | None = None) -> AnalysisInput:
    """Everything an analyzer needs for one checkpoint, with provenance.

    ``dataset``: ``FORMAT:ROOT`` overriding the recorded dataset (``--dataset``); the data is
    verified against the run's record either way (module docstring)."""
    if samples < 1 or batch_size < 1:
        raise LandscapeError(f"--samples and --batch-size must be >= 1 (got {samples}, {batch_size})")
    run_dir, ckpt_path = resolve_checkpoint(path, which)
    ckpt = load_checkpoint(ckpt_path)
    config = ckpt.meta.get("config") or (read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {})
    recorded = recorded_identity(run_dir, ckpt)
    spec = resolve_dataset(str(path), dataset, recorded, config)
    dev = resolve_device(device)
    model = build_model(ckpt).to(dev)
    check_finite_parameters(model, str(ckpt_path))
    criterion = make_criterion(loss, ranking_alpha=config.get("ranking_alpha", 0.5),
                               ranking_margin=config.get("ranking_margin", 0.0),
                               regression=config.get("loss", "l1"))
    split = {"split_mode": config["split"]} if config.get("split") else {}
    if config.get("split_ratio"):
        split["split_ratios"] = tuple(config["split_ratio"])
    data = load_dataset_spec(spec, score_column=config.get("score_column"), split_seed=config.get("split_seed", 0),
                             **split)
    verify_identity(recorded, data, str(path))
    batches, prov_subsets = {}, {}
    for subset in subsets:
        b, indices = split_analysis_batches(data, subset, samples, batch_size, ckpt.model_config["img_size"], seed)
        batches[subset] = [(x.to(dev), y.to(dev)) for x, y in b]
        prov_subsets[subset] = {"n": len(indices), "indices_sha256": hash_indices(indices),
                                "split_sha256": data.split_hash(subset)}
    prov = {"checkpoint": str(ckpt_path), "checkpoint_hash": ckpt.content_hash, "run": run_dir.name,
            "dataset": spec, "subsets": prov_subsets, "seed": seed, "batch_size": batch_size,
            "criterion": getattr(criterion, "describe", lambda: {"name": loss})(), "model_mode": "eval",
            "batchnorm": "running statistics (eval mode); Swin uses LayerNorm only",
            "device": str(dev), "crop": "one centre crop per image"}
    return AnalysisInput(run_dir, ckpt, model, criterion, batches, prov, data)
