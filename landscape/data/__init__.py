"""Datasets for IQA: records, formats and loading, patch sampling, analysis batches, checks.

- :mod:`~landscape.data.records`: :class:`ImageRecord`, :class:`IQADataset`, :data:`SPLITS`.
- :mod:`~landscape.data.formats`: one loader per format and the open registry
  (:func:`register_format`, :data:`FORMATS`: the registered names).
- :mod:`~landscape.data.loading`: :func:`load_dataset` / :func:`parse_dataset_spec` /
  :func:`load_dataset_spec` (``FORMAT:ROOT``); :mod:`~landscape.data.splits`: seeded splits.
- :mod:`~landscape.data.synthetic`: :func:`generate_synthetic`, the embedded default dataset.
- :mod:`~landscape.data.images`: :func:`decode_image` and the ImageNet normalisation.
- :mod:`~landscape.data.patches`: :class:`TrainPatches`, :func:`train_loader`,
  :func:`predict_images`: HyperIQA-style patch sampling and the test protocol.
- :mod:`~landscape.data.targets`: :func:`normalise`, scores to [0, 1] targets.
- :mod:`~landscape.data.analysis`: :func:`analysis_batches`, :func:`split_analysis_batches`:
  the analyzers' fixed evaluation batches.
- :mod:`~landscape.data.check`: :func:`check_dataset` (validation report),
  :func:`readable_records` (count/skip unreadable images before a job starts).
"""
from landscape.data.analysis import analysis_batches, split_analysis_batches
from landscape.data.check import DataCheckReport, check_dataset, readable_records
from landscape.data.formats import FORMATS, LOADERS, register_format
from landscape.data.images import IMAGENET_MEAN, IMAGENET_STD, decode_image
from landscape.data.loading import load_dataset, load_dataset_spec, parse_dataset_spec
from landscape.data.patches import (
    PatchBatch,
    Predictions,
    TestPatches,
    TrainPatchConfig,
    TrainPatches,
    predict_images,
    train_loader,
)
from landscape.data.records import SPLITS, ImageRecord, IQADataset
from landscape.data.synthetic import ensure_synthetic, generate_synthetic
from landscape.data.targets import normalise

__all__ = [
    "FORMATS", "LOADERS", "SPLITS", "ImageRecord", "IQADataset", "load_dataset", "load_dataset_spec",
    "parse_dataset_spec", "register_format", "generate_synthetic", "ensure_synthetic", "TrainPatches",
    "TrainPatchConfig", "PatchBatch", "TestPatches", "Predictions", "train_loader", "predict_images",
    "analysis_batches", "split_analysis_batches", "normalise", "decode_image", "IMAGENET_MEAN", "IMAGENET_STD",
    "DataCheckReport", "check_dataset", "readable_records",
]
