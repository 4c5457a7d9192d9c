"""The settings of a stored result, and which setting of a measure a report uses.

**Settings of a result** (:func:`hessian_settings`, :func:`sharpness_settings`): a flat mapping of
everything that changes the value, derived from what every stored result already carries (its
provenance, and for sharpness its spec), so files written before settings were compared read
the same way (each stored result is one setting):

- ``samples``: the number of analysed examples (Hessian: ``n_samples``; sharpness: the size of
  the analysed subsets, i.e. ``--samples`` unless a split was smaller);
- ``subsets`` (names) and ``indices`` (:func:`~landscape.provenance.content_key` of the subsets'
  index hashes: the same images);
- ``batch_size`` of the analysis batches: it changes the value whenever the criterion has
  terms inside a batch (the training loss's ranking term pairs the images of a batch); for a
  mean-decomposable loss it changes only rounding, and is kept anyway (conservative);
- ``seed``, ``criterion`` (name and parameters), ``mode``/``train``, ``weight_decay``;
- every estimator setting (Hessian: ``k``, ``which``, ``tol``, ``stop``, ``max_iter``, ``start``,
  trace ``method``/``n_matvecs``, density ...; sharpness: the measure's config: ``eps``,
  ``subspace_dim``, ``rho``, ``norm``, ``n_samples``, ``maxiter`` ...).

Left out, since they change at most float rounding: the device, the engine (data-parallel or
not, world size) and memory knobs (:data:`IGNORED`). A setting's key is
``content_key(settings)``.

**Choosing a setting per measure** (:func:`choose`): the candidates of every finished run are
filtered by the user's ``--samples`` and ``--setting MEASURE.KEY=VALUE``; the settings stored
for every run that has any are intersected. Grid measures (adaptive, average) then keep, per
remaining setting, the rho nearest the reference. One setting left: used. None: the runs were
analysed with different settings and the measure is not compared (a one-line reason names the
runs, the differing settings and the option to choose). Several: not compared either, until
the user picks one; nothing is ever mixed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from landscape.errors import LandscapeError
from landscape.provenance import content_key

IGNORED = frozenset({"max_cached_bytes", "chunk_size", "max_retained_batches", "block_size", "eigenvectors",
                     "engine", "world_size", "device"})
FAMILIES = ("hessian", "keskar", "adaptive", "average", "pacbayes", "noise")


def _criterion(value: Any) -> str | None:
    if isinstance(value, Mapping):
        rest = ", ".join(f"{k}={value[k]}" for k in sorted(value) if k != "name")
        return f"{value.get('name', '?')}({rest})" if rest else str(value.get("name", "?"))
    return None if value is None else str(value)


def _common(prov: Mapping[str, Any]) -> dict[str, Any]:
    subsets = prov.get("subsets") if isinstance(prov.get("subsets"), Mapping) else {}
    out: dict[str, Any] = {}
    if subsets:
        out["subsets"] = ",".join(sorted(subsets))
        out["indices"] = content_key({k: (v or {}).get("indices_sha256") if isinstance(v, Mapping) else v
                                      for k, v in subsets.items()}, 12)
        sizes = [v.get("n") for v in subsets.values() if isinstance(v, Mapping) and isinstance(v.get("n"), int)]
        if sizes:
            out["samples"] = max(sizes)
    for k in ("batch_size", "seed"):
        if prov.get(k) is not None:
            out[k] = prov[k]
    if prov.get("criterion") is not None:
        out["criterion"] = _criterion(prov["criterion"])
    return out


def _clean(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in IGNORED and v is not None}


def hessian_settings(prov: Mapping[str, Any]) -> dict[str, Any]:
    """Settings of a stored Hessian part from its provenance (module docstring)."""
    out = _common(prov)
    if isinstance(prov.get("n_samples"), int):
        out["samples"] = prov["n_samples"]
    for k in ("mode", "weight_decay"):
        if prov.get(k) is not None:
            out[k] = prov[k]
    spec = prov.get("settings")
    if isinstance(spec, Mapping):
        out.update(spec)
    return _clean(out)


def sharpness_settings(record: Mapping[str, Any]) -> dict[str, Any]:
    """Settings of a stored sharpness record (its spec's config and its provenance; module docstring)."""
    prov = record.get("provenance") if isinstance(record.get("provenance"), Mapping) else {}
    spec = record.get("spec") if isinstance(record.get("spec"), Mapping) else {}
    out = _common(prov)
    if "samples" not in out and isinstance(record.get("n_examples"), int):
        out["samples"] = record["n_examples"]
    if "criterion" not in out and spec.get("criterion") is not None:
        out["criterion"] = _criterion(spec["criterion"])
    config = spec.get("config")
    if isinstance(config, Mapping):
        out.update(config)
    return _clean(out)


def setting_key(settings: Mapping[str, Any]) -> str:
    """The key of a setting: :func:`~landscape.provenance.content_key` of the mapping."""
    return content_key(dict(settings), 12)


def describe(settings: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """``k=v, k=v`` of ``settings`` (only ``keys`` when given, in that order)."""
    keys = sorted(settings) if keys is None else keys
    return ", ".join(f"{k}={settings.get(k, '-')}" for k in keys)


# ------------------------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class SettingFilter:
    """``measure.key=value`` (``measure`` a family of :data:`FAMILIES`, a measure column or ``*``)."""

    measure: str
    key: str
    value: str

    def applies(self, family: str, measure: str) -> bool:
        return self.measure in ("*", family, measure)

    def matches(self, settings: Mapping[str, Any]) -> bool:
        if self.key not in settings:
            return False
        have = settings[self.key]
        if isinstance(have, bool):
            return self.value.lower() == str(have).lower()
        if isinstance(have, (int, float)):
            try:
                want = float(self.value)
            except ValueError:
                return False
            return math.isclose(float(have), want, rel_tol=1e-9, abs_tol=0.0) or float(have) == want
        return str(have) == self.value or json.dumps(have, sort_keys=True, default=str) == self.value

    def text(self) -> str:
        return f"{self.key}={self.value}"


def parse_filters(samples: int | None = None, settings: Sequence[str] = ()) -> list[SettingFilter]:
    """``--samples N`` (every measure) and each ``--setting MEASURE.KEY=VALUE`` as filters; one-line errors."""
    out: list[SettingFilter] = []
    if samples is not None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise LandscapeError(f"--samples {samples!r}: need a positive number of samples")
        out.append(SettingFilter("*", "samples", str(samples)))
    for text in settings:
        lhs, eq, value = str(text).partition("=")
        measure, dot, key = lhs.rpartition(".")
        if not eq or not dot or not measure or not key or not value:
            raise LandscapeError(f"--setting {text!r}: expected MEASURE.KEY=VALUE, e.g. hessian.samples=64 "
                                 f"(MEASURE: {', '.join(FAMILIES)} or a measure column)")
        out.append(SettingFilter(measure.strip(), key.strip(), value.strip()))
    return out


def check_filters(filters: Sequence[SettingFilter], seen: Mapping[tuple[str, str], set[str]]) -> None:
    """Refuse a ``--setting`` naming no stored measure, or a key no stored result of it has.

    ``seen``: ``(family, measure) -> setting keys`` of every candidate collected."""
    for flt in filters:
        if flt.measure == "*":
            continue
        hits = [keys for (fam, m), keys in seen.items() if flt.applies(fam, m)]
        if not hits:
            names = sorted({fam for fam, _ in seen} | {m for _, m in seen})
            raise LandscapeError(f"--setting {flt.measure}.{flt.text()}: no stored measure '{flt.measure}' "
                                 f"(stored: {', '.join(names) or 'none'})")
        keys = set().union(*hits)
        if flt.key not in keys:
            raise LandscapeError(f"--setting {flt.measure}.{flt.text()}: no stored {flt.measure} result has a "
                                 f"setting '{flt.key}' (settings: {', '.join(sorted(keys))})")


# ------------------------------------------------------------------------------------------- choice


@dataclass
class Candidate:
    """One stored result of a measure for one run: its settings, when it was made, the row values."""

    settings: dict[str, Any]
    created: str
    values: dict[str, Any]

    @property
    def key(self) -> str:
        return setting_key(self.settings)


@dataclass
class Choice:
    """The setting used for a measure (``settings``/``key``), or why it is not compared (``reason``)."""

    family: str
    measure: str
    settings: dict[str, Any] | None = None
    key: str = ""
    runs: list[str] = field(default_factory=list)
    reason: str = ""
    lacking: dict[str, str] = field(default_factory=dict)   # run -> why it has no value of the setting


def _dedupe(cands: Sequence[Candidate]) -> dict[str, Candidate]:
    """Setting key -> the newest candidate of that setting (re-runs of one setting agree up to rounding)."""
    out: dict[str, Candidate] = {}
    for c in sorted(cands, key=lambda c: c.created):
        out[c.key] = c
    return out


def _differing(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The setting names whose values differ among ``settings`` (``samples`` first, then by name)."""
    keys = sorted(set().union(*settings), key=lambda k: (k != "samples", k)) if settings else []
    return [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in settings}) > 1]


def _order(settings: Mapping[str, Any], keys: Sequence[str]) -> tuple:
    """Sort key of a setting by the values of ``keys`` (numbers by value)."""
    out = []
    for k in keys:
        v = settings.get(k)
        num = isinstance(v, (int, float)) and not isinstance(v, bool)
        out.append((0, float(v), "") if num else (1, 0.0, str(v)))
    return tuple(out)


def _most_held(kept: Mapping[str, Mapping[str, Candidate]], runs: Sequence[str], keys: Sequence[str]) -> dict:
    """The settings held by the most ``runs`` (ties: the smallest by ``keys``): the example option."""
    count: dict[str, int] = {}
    first: dict[str, Candidate] = {}
    for r in runs:
        for k, c in kept[r].items():
            count[k] = count.get(k, 0) + 1
            first.setdefault(k, c)
    best = min(count, key=lambda k: (-count[k], _order(first[k].settings, keys)))
    return first[best].settings


def _option(family: str, keys: Sequence[str], example: Mapping[str, Any]) -> str:
    key = "samples" if "samples" in keys else (keys[0] if keys else "KEY")
    value = example.get(key, "VALUE")
    hint = f"--setting {family}.{key}={value}"
    return f"--samples {value} or {hint}" if key == "samples" else hint


def _nearest(group: list[Candidate], pick: tuple[str, float]) -> Candidate:
    name, ref = pick

    def dist(c: Candidate) -> float:
        v = c.settings.get(name)
        return abs(math.log(v / ref)) if isinstance(v, (int, float)) and v > 0 else math.inf
    return min(group, key=dist)


def choose(family: str, measure: str, per_run: Mapping[str, Sequence[Candidate]],
           filters: Sequence[SettingFilter] = (), pick: tuple[str, float] | None = None,
           deciding: Sequence[str] | None = None) -> Choice:
    """The one setting of ``measure`` to use over the runs (module docstring).

    ``per_run``: run name -> its candidates (runs without any are not asked); ``deciding``: the runs
    whose settings decide (the finished ones; default all); ``pick``: ``(setting name, reference)``
    of a grid measure (the value nearest the reference is kept per setting).
    """
    mine = [f for f in filters if f.applies(family, measure)]
    kept = {run: _dedupe([c for c in cands if all(f.matches(c.settings) for f in mine)])
            for run, cands in per_run.items() if cands}
    choice = Choice(family, measure)
    wanted = ", ".join(f.text() for f in mine)
    for run, got in kept.items():
        if not got:
            choice.lacking[run] = f"no stored result with {wanted}"
    deciders = [r for r in (deciding if deciding is not None else list(per_run)) if kept.get(r)]
    if not deciders:
        choice.reason = f"{measure}: not compared: no run has a result with {wanted}" if mine else ""
        return choice
    common = set.intersection(*(set(kept[r]) for r in deciders))
    if not common:
        every = [c.settings for r in deciders for c in kept[r].values()]
        diff = _differing(every)
        groups: dict[str, list[str]] = {}
        for r in deciders:
            ordered = sorted(kept[r].values(), key=lambda c: _order(c.settings, diff))
            text = " | ".join(dict.fromkeys(describe(c.settings, diff) for c in ordered))
            groups.setdefault(text, []).append(r)
        parts = "; ".join(f"{', '.join(runs)}: {text}" for text, runs in groups.items())
        choice.reason = (f"{measure}: not compared: runs were analysed with different settings ({parts}); "
                         f"choose one with {_option(family, diff, _most_held(kept, deciders, diff))}")
        return choice
    cands = [kept[deciders[0]][k] for k in sorted(common)]
    if pick is not None:
        groups_: dict[str, list[Candidate]] = {}
        for c in cands:
            groups_.setdefault(setting_key({k: v for k, v in c.settings.items() if k != pick[0]}), []).append(c)
        cands = [_nearest(g, pick) for g in groups_.values()]
    if len(cands) > 1:
        diff = _differing([c.settings for c in cands])
        cands.sort(key=lambda c: _order(c.settings, diff))
        options = " | ".join(describe(c.settings, diff) for c in cands)
        choice.reason = (f"{measure}: not compared: {len(cands)} settings are stored for every run ({options}); "
                         f"choose one with {_option(family, diff, cands[0].settings)}")
        return choice
    chosen = cands[0]
    choice.settings, choice.key = chosen.settings, chosen.key
    for run, got in kept.items():
        if chosen.key in got:
            choice.runs.append(run)
        elif run not in choice.lacking:
            choice.lacking[run] = f"no stored result with the setting used ({chosen.key})"
    return choice
