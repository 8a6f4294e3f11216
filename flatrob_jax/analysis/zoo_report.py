"""The report's "Imported models" section: our measured accuracy next to the published one.

For every condition of the sweep that was imported rather than trained (its overrides hold
``import.zoo`` or ``import.arch``/``import.weights``, see ``flatrob_jax.study``), one row:
where the weights came from, then clean accuracy, corruption accuracy and Linf robust accuracy,
each as ours (1 - the condition's mean error over its runs) beside the number the zoo
publishes for the entry (``torch_import.zoo.Published``) and the difference in percentage
points. A published robust accuracy sits in the column of its threat model (corruptions or
Linf, with its eps); what a zoo does not publish, and what this sweep did not measure, is
shown as such, never filled in.

Ours are measured with the sweep's analysis settings (test subset size, the corruptions and
severities chosen, ``analysis.attacks.linf_eps``, AutoAttack or only PGD); the published
numbers use the full test sets and the zoo's own protocol, so a small difference is only
meaningful when the settings match (the zoo sweep configs choose matching ones).
"""

from __future__ import annotations

import math
import re

import numpy as np

from flatrob_jax.analysis import markdown
from flatrob_jax.analysis.design import Conditions
from flatrob_jax.analysis.design_stats import condition_means
from flatrob_jax.analysis.results import MetricTable
from flatrob_jax.torch_import import zoo

ZOO_KEY = "import.zoo"
WEIGHTS_KEY = "import.weights"
ARCH_KEY = "import.arch"
CORRUPTION_ERROR = "corruptions/mean_corruption_error"
# The attacks analysis names each threat model by its norm and radius
# (attacks.evaluate.threat_name: 'Linf_8over255'), with its radius at attacks/<threat>/eps.
LINF_EPS = re.compile(r"^attacks/(Linf[^/]*)/eps$")


def _pct(v) -> str:
    return f"{100 * v:.2f}%"


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _cell(ours, published, eps=None) -> str:
    """'ours (published P, +d pp)' with whatever of the two is known."""
    if not _finite(ours) and published is None:
        return "not measured; none published"
    mine = _pct(ours) if _finite(ours) else "not measured"
    if published is None:
        return f"{mine} (none published)"
    at = f" at eps {eps * 255:.3g}/255" if eps is not None else ""
    diff = f", {100 * (ours - published):+.2f} pp" if _finite(ours) else ""
    return f"{mine} (published {_pct(published)}{at}{diff})"


def _ours_at(ours: float | None, published: float | None) -> str:
    """Where ours was measured at another radius than the published one, which."""
    if ours is None or (published is not None and abs(ours - published) < 1e-6):
        return ""
    return f"; ours at eps {ours * 255:.3g}/255"


def _accuracy(table: MetricTable, conditions: Conditions, metric, condition) -> float | None:
    """1 - the condition's mean of the error ``metric``, or None when not measured."""
    if metric is None or metric not in table.metrics:
        return None
    error = condition_means(table.column(metric), conditions)[0][condition]
    return 1.0 - float(error) if math.isfinite(error) else None


def _source(overrides: dict):
    """(description, zoo entry or None) of an imported condition."""
    if ZOO_KEY in overrides:
        try:
            entry = zoo.get(overrides[ZOO_KEY])
        except KeyError:
            return f"zoo entry {overrides[ZOO_KEY]} (not in this catalogue)", None
        return f"zoo {entry.name} ({entry.arch})", entry
    weights = str(overrides.get(WEIGHTS_KEY, "?")).rsplit("/", 1)[-1]
    return f"file {weights} ({overrides.get(ARCH_KEY, '?')}; no published numbers)", None


def _linf_error(table: MetricTable, eps: float | None) -> tuple:
    """(error metric, attack, radius) of the measured Linf threat model at ``eps`` (the first
    measured one when ``eps`` is None or none matches): AutoAttack's where measured, else
    PGD's; (None, None, None) without a Linf attack."""
    threats = []
    for m in table.metrics:
        match = LINF_EPS.match(m)
        if match:
            values = table.column(m)
            values = values[np.isfinite(values)]
            threats.append((match.group(1), float(values.mean()) if values.size else math.nan))
    if not threats:
        return None, None, None
    at = [t for t in threats if eps is not None and abs(t[1] - eps) < 1e-6]
    name, radius = (at or threats)[0]
    for attack, label in (("autoattack", "AutoAttack"), ("pgd", "PGD")):
        metric = f"attacks/{name}/{attack}/error"
        if metric in table.metrics:
            return metric, label, radius
    return None, None, None


def rows(table: MetricTable, conditions: Conditions, clean: str | None) -> list:
    """One dict per imported condition of the sweep (``conditions`` of ``table``'s runs; its
    clean error ``clean``): label, source, ours and published accuracies. Ours at the Linf
    radius the zoo publishes, where the sweep measured it."""
    out = []
    for i, c in enumerate(conditions.conditions):
        if not any(k in c.overrides for k in (ZOO_KEY, WEIGHTS_KEY)):
            continue
        source, entry = _source(c.overrides)
        pub = entry.published if entry is not None else None
        pub_eps = pub.eps if pub and pub.threat_model == zoo.LINF else None
        linf, linf_attack, linf_eps = _linf_error(table, pub_eps)
        out.append(
            {
                "label": c.label,
                "source": source,
                "clean": _accuracy(table, conditions, clean, i),
                "clean_published": pub.clean_accuracy if pub else None,
                "corruptions": _accuracy(table, conditions, CORRUPTION_ERROR, i),
                "corruptions_published": (
                    pub.robust_accuracy if pub and pub.threat_model == zoo.CORRUPTIONS else None
                ),
                "linf": _accuracy(table, conditions, linf, i),
                "linf_attack": linf_attack,
                "linf_eps": linf_eps,
                "linf_published": (
                    pub.robust_accuracy if pub and pub.threat_model == zoo.LINF else None
                ),
                "linf_published_eps": pub.eps if pub and pub.threat_model == zoo.LINF else None,
                "published_source": pub.source if pub else None,
            }
        )
    return out


def render(found: list) -> list:
    """The Markdown lines of the section from its ``rows`` (none when the sweep imported
    nothing)."""
    if not found:
        return []
    attack = next((r["linf_attack"] for r in found if r["linf_attack"]), None)
    header = [
        "condition",
        "weights",
        "clean accuracy",
        "corruption accuracy",
        f"Linf robust accuracy ({attack or 'not measured'})",
    ]
    body = [
        [
            r["label"],
            r["source"],
            _cell(r["clean"], r["clean_published"]),
            _cell(r["corruptions"], r["corruptions_published"]),
            _cell(r["linf"], r["linf_published"], r["linf_published_eps"])
            + _ours_at(r["linf_eps"], r["linf_published_eps"]),
        ]
        for r in found
    ]
    # 'RobustBench <commit>: model_info/...json' -> 'RobustBench <commit>' (one per entry).
    sources = sorted({r["published_source"].split(":")[0] for r in found if r["published_source"]})
    lines = [
        "## Imported models: measured vs published",
        "",
        "Ours: 1 - the mean error over the condition's runs, with this sweep's analysis "
        "settings (test subset, corruptions and severities, analysis.attacks.linf_eps). "
        "Published: the zoo's number on its full test set and protocol; compare the two only "
        "where the settings match. pp: percentage points.",
        "",
        markdown.table(header, body),
        "",
    ]
    if sources:
        lines += [
            "Published numbers from: "
            + "; ".join(sources)
            + " (RobustBench: model_info/<dataset>/<threat>/<model>.json of each entry).",
            "",
        ]
    return lines
