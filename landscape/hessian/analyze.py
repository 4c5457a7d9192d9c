"""``analyze_hessian``: top-k eigenvalues, trace and density of the full-data Hessian, resumable.

The settings are one frozen :class:`HessianConfig`, validated once in ``__post_init__``;
:func:`analyze_hessian` takes it (or its fields as keyword options) and runs, for the whole
model and per block on request, :func:`~landscape.hessian.top_eigenvalues` (Lanczos),
:func:`~landscape.hessian.hessian_trace` (Hutch++/Hutchinson) and
:func:`~landscape.hessian.spectral_density` (SLQ) on one operator. With ``h5_path`` each
part is stored (:mod:`landscape.hessian.storage`) as soon as it is done, keyed by
:func:`landscape.provenance.content_key` of ``{model state hash, data hash (hash_batches),
mode, weight_decay, engine, the stable user provenance, part, block, params, settings of the
part}``; a part already stored under the same key (the latest or an earlier one: results of
other settings are kept beside it) is loaded, not recomputed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from torch import nn

from landscape import distributed as dist
from landscape import linalg
from landscape.batches import Batch, Criterion
from landscape.errors import LandscapeError, check_choice, check_positive_int
from landscape.hessian.blocks import block_operators
from landscape.hessian.estimators import (
    STARTS,
    Start,
    Stop,
    TraceMethod,
    Which,
    check_trace_method,
    hessian_trace,
    spectral_density,
    top_eigenvalues,
)
from landscape.hessian.operator import CurvatureOperator, HessianOperator
from landscape.hessian.results import HessianAnalysis
from landscape.hessian.storage import H5_GROUP, load_hessian_result, save_hessian_result, stored_keys
from landscape.provenance import content_key, hash_state
from landscape.provenance import provenance as make_provenance

_VOLATILE = {"created_utc", "versions"}
PARTS = ("topk", "trace", "density")


@dataclass(frozen=True)
class HessianConfig:
    """Settings of :func:`analyze_hessian` (defaults in brackets).

    Eigenvalues: ``top_k`` [5] (0 skips them), ``which`` [LA] (LA/SA/LM), ``tol`` [1e-3]
    relative tolerance of the ``stop`` [residual] rule, ``max_iter`` [200] products,
    ``max_basis`` [None] Lanczos basis before a thick restart, ``start`` [auto] rule of
    :func:`~landscape.hessian.start_vector`, ``eigenvectors`` [False] kept.
    Trace: ``trace`` [True], ``trace_method`` [hutch++], ``trace_matvecs`` [60] products,
    ``block_size`` [None] probe columns per product call.
    Density: ``density`` [False], ``density_runs`` [4], ``density_steps`` [60], kernel width
    ``sigma`` [None: ``sigma_rel`` [0.01] of the node span], ``n_grid`` [1024].
    Operator: ``blocks`` [None] ('stages' or a mapping name -> parameter names), ``weight_decay``
    [0] (H + wd I), ``train`` [False] (train-mode forward), ``max_retained_batches`` [None: auto].
    ``seed`` [0] seeds every estimator.
    """

    top_k: int = 5
    which: Which = "LA"
    tol: float = 1e-3
    stop: Stop = "residual"
    max_iter: int = 200
    max_basis: int | None = None
    start: Start = "auto"
    eigenvectors: bool = False
    trace: bool = True
    trace_method: TraceMethod = "hutch++"
    trace_matvecs: int = 60
    density: bool = False
    density_runs: int = 4
    density_steps: int = 60
    sigma: float | None = None
    sigma_rel: float = 0.01
    n_grid: int = 1024
    blocks: str | Mapping[str, Sequence[str]] | None = None
    weight_decay: float = 0.0
    train: bool = False
    seed: int = 0
    max_retained_batches: int | None = None
    block_size: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("top_k", self.top_k, minimum=0)
        check_choice("which", self.which, linalg.WHICH)
        check_choice("stop", self.stop, linalg.STOP_RULES)
        check_choice("start", self.start, STARTS)
        check_trace_method(self.trace_method)
        if not self.tol > 0:
            raise LandscapeError(f"tol={self.tol!r}: need a positive tolerance")
        check_positive_int("max_iter", self.max_iter)
        check_positive_int("trace_matvecs", self.trace_matvecs)
        check_positive_int("density_runs", self.density_runs)
        check_positive_int("density_steps", self.density_steps)
        check_positive_int("n_grid", self.n_grid, minimum=2)
        for name in ("max_basis", "block_size"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.max_retained_batches is not None:
            check_positive_int("max_retained_batches", self.max_retained_batches, minimum=0)

    @classmethod
    def resolve(cls, config: HessianConfig | None, options: Mapping[str, Any]) -> HessianConfig:
        """``config``, or a config of ``options`` (its field names); both at once is an error."""
        if config is not None and options:
            raise LandscapeError(f"pass either a HessianConfig or its options, not both "
                                 f"(got config and {', '.join(sorted(options))})")
        if config is not None:
            return config
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise LandscapeError(f"unknown Hessian option '{unknown[0]}' (options: {', '.join(sorted(fields))})")
        return cls(**options)

    def specs(self) -> dict[str, dict[str, Any] | None]:
        """The settings of each part that enter its content key (None: part not asked for)."""
        return {
            "topk": dict(k=self.top_k, which=self.which, tol=self.tol, stop=self.stop, max_iter=self.max_iter,
                         max_basis=self.max_basis, start=self.start, seed=self.seed,
                         eigenvectors=self.eigenvectors) if self.top_k else None,
            "trace": dict(method=self.trace_method, n_matvecs=self.trace_matvecs, seed=self.seed) if self.trace else None,
            "density": dict(n_runs=self.density_runs, steps=self.density_steps, seed=self.seed, sigma=self.sigma,
                            sigma_rel=self.sigma_rel, n_grid=self.n_grid) if self.density else None,
        }

    def runners(self, progress: Callable[[dict], None] | None = None
                ) -> dict[str, Callable[[CurvatureOperator], Any]]:
        """Part name -> the estimator call with these settings (``progress``: the estimators' callback)."""
        return {
            "topk": lambda o: top_eigenvalues(o, self.top_k, which=self.which, tol=self.tol, stop=self.stop,
                                              max_iter=self.max_iter, max_basis=self.max_basis, seed=self.seed,
                                              start=self.start, eigenvectors=self.eigenvectors, progress=progress),
            "trace": lambda o: hessian_trace(o, method=self.trace_method, n_matvecs=self.trace_matvecs,
                                             seed=self.seed, block_size=self.block_size, progress=progress),
            "density": lambda o: spectral_density(o, n_runs=self.density_runs, steps=self.density_steps,
                                                  seed=self.seed, sigma=self.sigma, sigma_rel=self.sigma_rel,
                                                  n_grid=self.n_grid, progress=progress),
        }


def analyze_hessian(model: nn.Module, criterion: Criterion, batches: Iterable[Batch],
                    config: HessianConfig | None = None, *, operator: CurvatureOperator | None = None,
                    h5_path: str | Path | None = None, provenance: Mapping[str, Any] | None = None,
                    group: str = H5_GROUP, progress: Callable[[dict], None] | None = None,
                    **options: Any) -> HessianAnalysis:
    """Top-k eigenvalues, trace and density of the full-data Hessian (and per block on request).

    Settings: ``config`` or its fields as keyword ``options``
    (``analyze_hessian(model, criterion, batches, top_k=5, trace=True, density=True)``).
    With ``h5_path`` each part is written to ``<group>/<part>`` (blocks:
    ``<group>/blocks/<name>/<part>``) as soon as it finishes, keyed as in the module docstring;
    a part already stored with the same key is loaded, not recomputed. The model's mode flags
    and parameters are unchanged on return.

    ``operator``: a prebuilt operator to use instead of building a :class:`HessianOperator`
    from ``batches`` and the operator settings (``train``, ``weight_decay``,
    ``max_retained_batches``, then ignored), e.g. :class:`landscape.hessian.DataParallelHessian`.
    Under a process group rank 0 alone reads and writes ``h5_path`` and tells the other ranks
    what it found. ``progress(info)``: called after each product of a part computed now with
    :func:`~landscape.hessian.estimators.progress_info`'s dict plus ``block`` ("" for the whole model).
    """
    cfg = HessianConfig.resolve(config, options)
    op = operator if operator is not None else HessianOperator(
        model, criterion, batches, train=cfg.train, weight_decay=cfg.weight_decay,
        max_retained_batches=cfg.max_retained_batches)
    if cfg.top_k > op.n:
        raise LandscapeError(f"top_k={cfg.top_k} exceeds the number of parameters ({op.n})")
    targets: list[tuple[str | None, CurvatureOperator]] = [(None, op)]
    if cfg.blocks is not None:
        targets += list(block_operators(op, cfg.blocks).items())
    for name, o in targets[1:]:
        if cfg.top_k > o.n:
            raise LandscapeError(f"top_k={cfg.top_k} exceeds the number of parameters of block {name!r} ({o.n})")
    engine = dict(op.engine_provenance)      # e.g. data-parallel: engine, world_size
    prov = {k: v for k, v in (provenance or {}).items() if k not in _VOLATILE}
    base: dict[str, Any] = {}
    if h5_path is not None:
        base = {"model": hash_state(model.state_dict()), "data": op.data_hash(),
                "mode": op.mode, "weight_decay": op.weight_decay, "user": prov}
        if "engine" in engine:
            base["engine"] = engine["engine"]
    specs = cfg.specs()
    parts: dict[str | None, dict[str, Any]] = {name: {} for name, _ in targets}
    loaded: list[str] = []
    total = 0
    writer = h5_path is not None and dist.is_main()
    with op:
        for name, o in targets:
            for part, spec in specs.items():
                if spec is None:
                    continue
                key = ""
                if h5_path is not None:
                    key = content_key({**base, "part": part, "block": name or "",
                                       "params": o.param_names if name else "all", **spec})
                    stored = None
                    if writer and key in stored_keys(h5_path, part, block=name, group=group):
                        stored = load_hessian_result(h5_path, part, block=name, group=group, key=key)[0]
                    stored = dist.broadcast_object(stored)
                    if stored is not None:
                        parts[name][part] = stored
                        loaded.append(f"blocks/{name}/{part}" if name else part)
                        continue
                report = None if progress is None else (
                    lambda info, b=name or "": progress({**info, "block": b}))
                value = cfg.runners(report)[part](o)
                total += value.n_matvecs
                parts[name][part] = value
                if writer:
                    ours = dict(method=f"hessian/{part}", settings=spec, model_hash=base["model"],
                                data_hash=base["data"], n_samples=op.n_samples, loss=op.loss,
                                mode=op.mode, weight_decay=op.weight_decay, block=name or "", **engine)
                    save_hessian_result(h5_path, value, make_provenance(**{**prov, **ours}), key=key, group=group)
    blocks = {name: HessianAnalysis(mode=o.mode, n_params=o.n, **parts[name]) for name, o in targets[1:]}
    return HessianAnalysis(mode=op.mode, n_params=op.n, blocks=blocks, loss=op.loss, n_matvecs=total,
                           loaded=loaded, **parts[None])
