"""Regression tables from :class:`~analysis.estimation.PanelResult` objects.

One function, :func:`regression_table`, turns fitted models into a
:class:`RegressionTable`: coefficients of the regressors of interest with standard errors
(or t statistics, confidence intervals or p-values) beneath them, then rows that say how
each model was estimated (unit and period effects, estimator, standard errors) and its
size and fit (observations, units, R-squared within and overall). The table renders as
HTML in a notebook and in the book (:meth:`RegressionTable.to_html`) and exports to LaTeX
(:meth:`RegressionTable.to_latex`), both at fixed precision so that re-running a chapter
does not change its text unless a number changes.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.estimation import ESTIMATORS, PanelResult

__all__ = ["STAT_OPTIONS", "RegressionTable", "regression_table"]

STAT_OPTIONS = ("se", "t", "ci", "p")
_STAR_LEVELS = ((0.01, "***"), (0.05, "**"), (0.10, "*"))
_STAT_NOTE = {
    "se": "Standard errors in parentheses.",
    "t": "t statistics in brackets.",
    "ci": "95% confidence intervals in brackets.",
    "p": "p-values in parentheses.",
}
_ESTIMATOR_SHORT = {
    "pooled": "Pooled OLS",
    "between": "Between",
    "fe": "FE",
    "twfe": "TWFE",
    "re": "RE",
    "fd": "FD",
    "cre": "CRE",
}


def _unit_effects(r: PanelResult) -> str:
    return {
        "fe": "Yes",
        "twfe": "Yes",
        "fd": "Differenced",
        "re": "Random",
        "cre": "Random + means",
        "between": "Means",
        "pooled": "No",
    }[r.spec.estimator]


def _period_effects(r: PanelResult) -> str:
    return {"time": "Yes", "unit+time": "Yes", "state-by-year": "State × period"}.get(r.spec.effects, "No")


def _cov_short(r: PanelResult) -> str:
    s = r.spec
    return {
        "classical": "Classical",
        "robust": "Robust",
        "cluster-unit": f"Cluster: {s.entity}",
        "cluster-state": f"Cluster: {s.state}",
        "cluster-twoway": f"Cluster: {s.entity} & {s.time}",
        "driscoll-kraay": "Driscoll-Kraay",
    }[s.cov]


def _fmt(x: float, digits: int) -> str:
    if x is None or not np.isfinite(x):
        return ""
    s = f"{x:.{digits}f}"
    return "0." + "0" * digits if s.lstrip("-") == "0." + "0" * digits else s  # no "-0.000"


@dataclass
class RegressionTable:
    """A rendered regression table.

    ``frame`` holds the cells as strings (row labels in the index; a statistic row has an
    empty label), ``estimates`` the numbers behind the coefficient block (MultiIndex
    ``(term, "coef"|"se"|"p")`` by model), ``n_coef_rows`` where the coefficient block ends,
    and ``notes`` the footnote.
    """

    frame: pd.DataFrame
    estimates: pd.DataFrame
    n_coef_rows: int
    notes: str = ""
    title: str = ""
    header: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.frame.to_string()

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_html(self, table_class: str = "regression-table") -> str:
        """HTML ``<table>`` with the coefficient block and the model-information block in
        separate ``<tbody>`` elements and the notes in a ``<tfoot>``."""
        e = html.escape
        cols = list(self.frame.columns)
        out = [f'<table class="{e(table_class)}">']
        if self.title:
            out.append(f"<caption>{e(self.title)}</caption>")
        out.append("<thead>")
        for label, text in self.header.items():
            out.append(
                f'<tr><th></th><th colspan="{len(cols)}" style="text-align:center">{e(label)}: {e(text)}</th></tr>'
            )
        out.append("<tr><th></th>" + "".join(f'<th style="text-align:center">{e(str(c))}</th>' for c in cols) + "</tr>")
        out.append("</thead>")
        rows = list(self.frame.itertuples())
        for block in (rows[: self.n_coef_rows], rows[self.n_coef_rows :]):
            out.append("<tbody>")
            for row in block:
                label, *cells = row
                out.append(
                    f'<tr><th style="text-align:left">{e(str(label))}</th>'
                    + "".join(f'<td style="text-align:center">{e(str(c))}</td>' for c in cells)
                    + "</tr>"
                )
            out.append("</tbody>")
        if self.notes:
            out.append(f'<tfoot><tr><td colspan="{len(cols) + 1}"><small>{e(self.notes)}</small></td></tr></tfoot>')
        out.append("</table>")
        return "\n".join(out)

    def to_latex(self, label: str | None = None) -> str:
        """A ``booktabs`` table (needs ``\\usepackage{booktabs}``), cells escaped for LaTeX."""
        cols = list(self.frame.columns)
        lines = []
        if self.title or label:
            lines += ["\\begin{table}[htbp]", "\\centering"]
            if self.title:
                lines.append(f"\\caption{{{_tex(self.title)}}}")
            if label:
                lines.append(f"\\label{{{label}}}")
        lines.append("\\begin{tabular}{l" + "c" * len(cols) + "}")
        lines.append("\\toprule")
        for name, text in self.header.items():
            lines.append(f" & \\multicolumn{{{len(cols)}}}{{c}}{{{_tex(name)}: {_tex(text)}}} \\\\")
        lines.append(" & " + " & ".join(_tex(str(c)) for c in cols) + " \\\\")
        lines.append("\\midrule")
        for i, row in enumerate(self.frame.itertuples()):
            if i == self.n_coef_rows:
                lines.append("\\midrule")
            label, *cells = row
            lines.append(_tex(str(label)) + " & " + " & ".join(_tex(str(c)) for c in cells) + " \\\\")
        lines.append("\\bottomrule")
        if self.notes:
            lines.append(f"\\multicolumn{{{len(cols) + 1}}}{{l}}{{\\footnotesize {_tex(self.notes)}}} \\\\")
        lines.append("\\end{tabular}")
        if self.title or label:
            lines.append("\\end{table}")
        return "\n".join(lines)


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "²": r"$^2$",
    "×": r"$\times$",
}


def _tex(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in s)


def regression_table(
    results: Mapping[str, PanelResult] | Sequence[PanelResult],
    regressors: Sequence[str] | None = None,
    stat: str = "se",
    stars: bool = False,
    digits: int = 3,
    labels: Mapping[str, str] | None = None,
    title: str = "",
) -> RegressionTable:
    """A regression table, one column per model.

    Parameters
    ----------
    results : models by column name (a dict), or a sequence (columns named (1), (2), ...).
    regressors : terms to show, in order; default: the regressors of interest of the models,
        in order of first appearance (controls and effects are summarised, not listed).
    stat : what goes under each coefficient: ``"se"`` (in parentheses), ``"t"`` or ``"ci"``
        (95%, in brackets), ``"p"`` (in parentheses).
    stars : append *, **, *** for p < 0.10, 0.05, 0.01 (off by default: the book reports
        intervals, not significance stars).
    digits : decimals of coefficients and statistics (R-squared always 3).
    labels : display names for terms (e.g. ``{"assn_per_1k": "Associations per 1,000"}``).
    title : caption.
    """
    if stat not in STAT_OPTIONS:
        raise ValueError(f"stat must be one of {STAT_OPTIONS}, not {stat!r}")
    if isinstance(results, Mapping):
        models = dict(results)
    else:
        models = {f"({i + 1})": r for i, r in enumerate(results)}
    if not models:
        raise ValueError("No results to tabulate.")
    for name, r in models.items():
        if not isinstance(r, PanelResult):
            raise TypeError(f"{name!r} is a {type(r).__name__}, not a PanelResult")
    if regressors is None:
        regressors = list(dict.fromkeys(t for r in models.values() for t in r.spec.regressors))
    labels = dict(labels or {})

    cells: list[tuple[str, list[str]]] = []
    est_rows: dict[tuple[str, str], list[float]] = {}
    for term in regressors:
        coef_row, stat_row, b_num, s_num, p_num = [], [], [], [], []
        for r in models.values():
            if term not in r.params.index:
                coef_row.append("")
                stat_row.append("")
                b_num.append(np.nan)
                s_num.append(np.nan)
                p_num.append(np.nan)
                continue
            b, se, p = float(r.params[term]), float(r.std_errors[term]), float(r.pvalues[term])
            b_num.append(b)
            s_num.append(se)
            p_num.append(p)
            star = next((sym for level, sym in _STAR_LEVELS if p < level), "") if stars else ""
            coef_row.append(_fmt(b, digits) + star)
            if stat == "se":
                stat_row.append(f"({_fmt(se, digits)})")
            elif stat == "t":
                stat_row.append(f"[{_fmt(b / se, 2)}]")
            elif stat == "p":
                stat_row.append(f"({_fmt(p, 3)})")
            else:
                lo, hi = r.conf_int.loc[term, ["lower", "upper"]]
                stat_row.append(f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]")
        cells.append((labels.get(term, term), coef_row))
        cells.append(("", stat_row))
        est_rows[(term, "coef")] = b_num
        est_rows[(term, "se")] = s_num
        est_rows[(term, "p")] = p_num
    n_coef_rows = len(cells)

    rs = list(models.values())
    outcomes = list(dict.fromkeys(r.spec.outcome for r in rs))
    header = {}
    if len(outcomes) == 1:
        header["Dependent variable"] = labels.get(outcomes[0], outcomes[0])
    else:
        cells.append(("Dependent variable", [labels.get(r.spec.outcome, r.spec.outcome) for r in rs]))
    cells += [
        ("Estimator", [_ESTIMATOR_SHORT[r.spec.estimator] for r in rs]),
        ("Unit effects", [_unit_effects(r) for r in rs]),
        ("Period effects", [_period_effects(r) for r in rs]),
        ("Controls", [str(len(r.spec.controls)) if r.spec.controls else "None" for r in rs]),
        ("Standard errors", [_cov_short(r) for r in rs]),
        ("Observations", [f"{r.nobs:,}" for r in rs]),
        ("Units", [f"{r.n_units:,}" for r in rs]),
        ("R² within", [_fmt(r.rsquared_within, 3) for r in rs]),
        ("R² overall", [_fmt(r.rsquared_overall, 3) for r in rs]),
    ]
    frame = pd.DataFrame([row for _, row in cells], index=[lab for lab, _ in cells], columns=list(models))
    estimates = pd.DataFrame(est_rows, index=list(models)).T
    estimates.index = pd.MultiIndex.from_tuples(estimates.index, names=["term", "quantity"])
    notes = _STAT_NOTE[stat]
    if stars:
        notes += " * p<0.10, ** p<0.05, *** p<0.01."
    abbreviations = sorted(
        {
            f"{_ESTIMATOR_SHORT[r.spec.estimator]} = {ESTIMATORS[r.spec.estimator]}"
            for r in rs
            if _ESTIMATOR_SHORT[r.spec.estimator] != ESTIMATORS[r.spec.estimator]
        }
    )
    if abbreviations:
        notes += " " + "; ".join(abbreviations) + "."
    return RegressionTable(
        frame=frame, estimates=estimates, n_coef_rows=n_coef_rows, notes=notes, title=title, header=header
    )
