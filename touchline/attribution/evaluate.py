r"""Score models against ground truth: how far is each model from the true incremental effect?

Truth is what a channel really caused: the conversions (and revenue) lost when the simulator
runs the same people again without that channel. Credits and truth are compared as **shares**
(attribution distributes the conversions it sees, truth counts only incremental ones):

.. math:: L_1 = \sum_c \Bigl|\frac{C_c}{\sum_d C_d} - \frac{T_c}{\sum_d T_d}\Bigr| \in [0, 2]

plus the worst single channel :math:`\max_c |\cdot|` and Spearman's rank correlation between
credits and truth. Channels missing on either side count as zero.

Two truth files are read (:func:`load_truth`): the simulator's ``truth.json``
(``{"channels": {name: {"incremental_conversions": ..., "incremental_revenue": ...}}}``) and
``gen_paths.py --truth`` (``{"expected_conversions_lost_without_channel": {name: ...}}``, no
revenue).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from touchline.errors import InputError


@dataclass(frozen=True)
class Truth:
    """True incremental conversions (and revenue, when known) per channel."""

    conversions: Mapping[str, float]
    revenue: Mapping[str, float] | None = None
    source: str = "truth"


def load_truth(file: Path) -> Truth:
    """Read either truth format (see the module docstring)."""
    file = Path(file)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise InputError(f"{file}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{file}: not JSON: {exc}") from exc
    return truth_from_dict(data, source=str(file))


def truth_from_dict(data: Mapping[str, object], source: str = "truth") -> Truth:
    """A :class:`Truth` from parsed JSON of either format."""
    channels = data.get("channels")
    if isinstance(channels, Mapping):
        try:
            conversions = {str(k): float(v["incremental_conversions"]) for k, v in channels.items()}
            revenue = {
                str(k): float(v.get("incremental_revenue", math.nan)) for k, v in channels.items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{source}: each entry of 'channels' needs a number 'incremental_conversions' "
                f"({exc})"
            ) from exc
        has_revenue = all(math.isfinite(v) for v in revenue.values())
        return Truth(conversions, revenue if has_revenue else None, source)
    lost = data.get("expected_conversions_lost_without_channel")
    if isinstance(lost, Mapping):
        return Truth({str(k): float(v) for k, v in lost.items()}, None, source)
    raise InputError(
        f"{source}: no ground truth found: expected 'channels' (simulator truth.json) or "
        "'expected_conversions_lost_without_channel' (gen_paths.py --truth)"
    )


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    # scipy warns on constant input; that case has no ranking to compare
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def score(credits: Mapping[str, float], truth: Mapping[str, float]) -> dict[str, object]:
    """L1 share distance, worst channel and rank correlation of one model's credits."""
    channels = sorted(set(credits) | set(truth))
    c = np.array([float(credits.get(ch, 0.0)) for ch in channels])
    t = np.array([float(truth.get(ch, 0.0)) for ch in channels])
    c_share = c / c.sum() if c.sum() else np.zeros_like(c)
    t_share = t / t.sum() if t.sum() else np.zeros_like(t)
    error = c_share - t_share
    worst = int(np.argmax(np.abs(error))) if len(channels) else 0
    return {
        "l1_share": float(np.abs(error).sum()),
        "worst_channel": channels[worst] if channels else "",
        "worst_error": float(error[worst]) if channels else 0.0,
        "spearman": _spearman(c, t),
    }


def evaluate(
    credits_by_model: Mapping[str, pd.DataFrame] | pd.DataFrame,
    truth: Truth | Mapping[str, float],
    *,
    measure: str = "conversions",
) -> pd.DataFrame:
    """Rank models by L1 share distance to the truth (best first).

    ``credits_by_model`` is either ``{model: attribute(...) frame}`` or one ``compare()`` frame
    (a label column, one column per model). ``measure`` is ``"conversions"`` or ``"value"``
    (needs truth revenue). Returns ``model``, ``l1_share``, ``worst_channel``, ``worst_error``
    (signed share error there), ``spearman``.
    """
    if isinstance(truth, Truth):
        target = truth.conversions if measure == "conversions" else truth.revenue
        if target is None:
            raise InputError(f"{truth.source}: has no incremental revenue to score value against")
    else:
        target = truth
    rows = []
    if isinstance(credits_by_model, pd.DataFrame):
        level = credits_by_model.attrs.get("level", credits_by_model.columns[0])
        labels = credits_by_model[level].astype(str)
        models = {
            m: dict(zip(labels, credits_by_model[m], strict=True))
            for m in credits_by_model.columns
            if m != level
        }
    else:
        models = {}
        for name, frame in credits_by_model.items():
            level = frame.attrs.get("level", frame.columns[0])
            models[name] = dict(zip(frame[level].astype(str), frame[measure], strict=True))
    for name, credits in models.items():
        rows.append({"model": name, **score(credits, target)})
    table = pd.DataFrame(
        rows, columns=["model", "l1_share", "worst_channel", "worst_error", "spearman"]
    )
    return table.sort_values(["l1_share", "model"], ignore_index=True)
