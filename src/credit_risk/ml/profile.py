"""The reference profile: how a model's training applicants and its answers on them are spread.

Computed by the train stage on the training split and stored with the model (DVC output, MLflow
artifact of the training run, file of the BentoML model), so that drift can be measured against
it without the training data. For every feature, the probability of default and the score it
holds quantile bins (cut points from the training split), one bin for the 96/98 codes where the
feature has them and one for missing values, and the share of applicants in each bin; for the
probability also its quantiles (so the decline rate at any threshold can be read off), and how
often each reason code was given. The file is byte-deterministic: sorted keys, rounded floats.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from credit_risk.ml.contract import FEATURES, REASON_CODES

PROFILE_VERSION = 1
QUANTILE_BINS = 10
PROBABILITY_QUANTILES = 1001
"""Quantiles of the probability kept (every 0.1 %), for the reference decline rate."""
DECIMALS = 6


def bin_edges(values: np.ndarray, sentinel_codes=()) -> list[float]:
    """The distinct decile cut points of the present values that are not sentinel codes.

    A value ``v`` falls in the first bin whose cut point is ``>= v``, or after the last one.
    """
    regular = values[~np.isnan(values) & ~np.isin(values, sentinel_codes)]
    if regular.size == 0:
        return []
    levels = np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]
    cuts = np.quantile(regular, levels, method="inverted_cdf")
    return sorted({round(float(cut), DECIMALS) for cut in cuts})


def bin_indices(values: np.ndarray, edges: list[float], sentinel_codes=()) -> np.ndarray:
    """The bin of each value: by the cut points, then the sentinel bin (if any), then missing."""
    index = np.searchsorted(np.asarray(edges, dtype="float64"), values, side="left")
    bins = len(edges) + 1
    if sentinel_codes:
        index[np.isin(values, sentinel_codes)] = bins
        bins += 1
    index[np.isnan(values)] = bins
    return index


def bin_count(entry: dict) -> int:
    """How many bins a profile entry has (cut-point bins, sentinel bin, missing bin)."""
    return len(entry["edges"]) + 1 + bool(entry["sentinel_codes"]) + 1


def bin_labels(edges: list[float], sentinel_codes=()) -> list[str]:
    """Readable names of the bins, e.g. ``≤ 30``, ``30–45``, ``> 80``, ``96/98``, ``missing``."""
    if not edges:
        labels = ["any"]
    else:
        labels = [f"≤ {edges[0]:g}"]
        labels += [f"{low:g}–{high:g}" for low, high in zip(edges, edges[1:], strict=False)]
        labels.append(f"> {edges[-1]:g}")
    if sentinel_codes:
        labels.append("/".join(str(code) for code in sentinel_codes))
    return [*labels, "missing"]


def distribution(values: np.ndarray, sentinel_codes=()) -> dict:
    """A profile entry: cut points, bin labels and the share of ``values`` in each bin."""
    values = np.asarray(values, dtype="float64")
    edges = bin_edges(values, sentinel_codes)
    entry = {"edges": edges, "sentinel_codes": list(sentinel_codes)}
    counts = np.bincount(bin_indices(values, edges, sentinel_codes), minlength=bin_count(entry))
    entry["labels"] = bin_labels(edges, sentinel_codes)
    entry["proportions"] = rounded(counts / max(len(values), 1))
    return entry


def build_profile(
    features: pd.DataFrame, probability: np.ndarray, scores: np.ndarray, reasons: list[list]
) -> dict:
    """The profile of the training applicants ``features`` (contract columns) and the model's
    answers on them (as :func:`credit_risk.ml.scorecard.assess` gives them)."""
    given = pd.Series([reason["code"] for answer in reasons for reason in answer])
    frequency = given.value_counts()
    levels = np.linspace(0, 1, PROBABILITY_QUANTILES)
    probability = np.asarray(probability, dtype="float64")
    return {
        "profile_version": PROFILE_VERSION,
        "rows": len(features),
        "features": {
            feature.name: distribution(features[feature.name].to_numpy(), feature.sentinel_codes)
            for feature in FEATURES
        },
        "probability": distribution(probability)
        | {
            "mean": round(float(probability.mean()), DECIMALS),
            "quantiles": rounded(np.quantile(probability, levels)),
        },
        "score": distribution(scores),
        "reasons": {
            code.code: round(float(frequency.get(code.code, 0)) / len(features), DECIMALS)
            for code in REASON_CODES
        },
    }


def reference_decline_rate(profile: dict, threshold: float) -> float:
    """The share of training applicants with a probability of at least ``threshold``."""
    quantiles = profile["probability"]["quantiles"]
    below = np.interp(threshold, quantiles, np.linspace(0, 1, len(quantiles)))
    return float(1 - below)


def rounded(values) -> list[float]:
    return [round(float(value), DECIMALS) for value in values]


def profile_bytes(profile: dict) -> bytes:
    """The canonical file form: sorted keys, one line per value, newline at the end."""
    return (json.dumps(profile, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def read_profile(path: Path) -> dict:
    """A profile file, checked to be one this code can read."""
    try:
        profile = json.loads(Path(path).read_text(encoding="utf-8"))
        version = profile["profile_version"]
        missing = {f.name for f in FEATURES} - profile["features"].keys()
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a reference profile") from None
    if version != PROFILE_VERSION:
        raise ValueError(f"{path}: reference profile version {version}, {PROFILE_VERSION} expected")
    if missing:
        raise ValueError(f"{path}: reference profile lacks the features {sorted(missing)}")
    return profile
