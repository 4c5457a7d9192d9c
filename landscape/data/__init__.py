"""Datasets for IQA: records and formats, the synthetic generator, patch sampling, checks.

- :func:`load_dataset` / :func:`parse_dataset_spec`: the formats in :data:`FORMATS`.
- :func:`generate_synthetic`: the embedded default dataset.
- :class:`TrainPatches`, :func:`train_loader`, :func:`predict_images`,
  :func:`analysis_batches`: HyperIQA-style patch sampling and evaluation.
- :func:`check_dataset`: validation report; :func:`readable_records`: count/skip unreadable images
  before a job starts.
"""
from landscape.data.check import DataCheckReport, check_dataset, readable_records
from landscape.data.patches import (IMAGENET_MEAN, IMAGENET_STD, PatchBatch, Predictions, TestPatches, TrainPatchConfig,
                      TrainPatches, analysis_batches, decode_image, predict_images, train_loader)
from landscape.data.records import (FORMATS, LOADERS, SPLITS, ImageRecord, IQADataset, load_dataset, parse_dataset_spec,
                      register_format)
from landscape.data.synthetic import ensure_synthetic, generate_synthetic

__all__ = [
    "FORMATS", "LOADERS", "SPLITS", "ImageRecord", "IQADataset", "load_dataset", "parse_dataset_spec",
    "register_format", "generate_synthetic", "ensure_synthetic", "TrainPatches", "TrainPatchConfig",
    "PatchBatch", "TestPatches", "Predictions", "train_loader", "predict_images", "analysis_batches",
    "decode_image", "IMAGENET_MEAN", "IMAGENET_STD", "DataCheckReport", "check_dataset", "readable_records",
]
