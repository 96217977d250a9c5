"""The pre-declared hypotheses of Chapter 1, as data so every chapter can report against them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

HYPOTHESES_PATH = Path(__file__).with_name("hypotheses.yml")


@lru_cache(maxsize=1)
def load_hypotheses() -> dict:
    with open(HYPOTHESES_PATH, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    ids = [h["id"] for h in doc["hypotheses"]]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{HYPOTHESES_PATH}: duplicate hypothesis ids {ids}")
    return doc


def hypotheses_table() -> pd.DataFrame:
    """One row per hypothesis: id, short name, claim, test, and what would count against it."""
    rows = load_hypotheses()["hypotheses"]
    return pd.DataFrame(rows, columns=["id", "short", "claim", "test", "against"]).set_index("id")


def equivalence_bounds() -> pd.DataFrame:
    """Smallest effect of interest per outcome, for a one within-county-SD rise in density."""
    sesoi = load_hypotheses()["smallest_effect_of_interest"]
    return pd.DataFrame.from_dict(sesoi, orient="index").rename_axis("outcome")


def additions() -> list[dict]:
    """Dated additions made after the first results (never changes to what was declared)."""
    return list(load_hypotheses().get("additions", []))


def policy_share_of_gradient() -> float:
    """Smallest effect of policy interest as a share of the pooled gradient (addition A1)."""
    (a1,) = [a for a in additions() if a["id"] == "A1"]
    return float(a1["parameters"]["policy_share_of_gradient"])
