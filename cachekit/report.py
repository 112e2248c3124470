"""Evaluation results and the files `clipcache eval` writes from them.

:class:`EvalResult` is one number with its context (protocol, method, shots, CI, per-class
accuracy, confusion, notes). :func:`write_report` turns a list of them into ``results.json``,
``results.md``, ``per_class.csv`` and plots. Results of different protocols go in separate
markdown tables: their numbers are not comparable (protocols.md §1, §6.9).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from cachekit.errors import InputError


@dataclass
class EvalResult:
    """One evaluation: accuracy and ci95 in percent; ``ways``/``shots``/``queries`` None where the
    protocol has none (all-way, zero-shot)."""

    protocol: str
    method: str
    metric: str
    ways: int | None
    shots: int | None
    queries: int | None
    episodes: int
    accuracy: float
    ci95: float  # episode interval 1.96 s / sqrt(E), the papers' (per video for all-way / zero-shot)
    video_ci95: float | None = None  # video-level interval (episodes.video_ci): test videos and episodes re-drawn
    videos: int | None = None  # distinct test videos behind the number
    classes: int | None = None  # distinct test classes behind the number
    overlap: str | None = None  # set when --allow-overlap let training or selection data be evaluated
    encoder: str | None = None  # the encoder's caveat (random / toy weights: cachekit.caveat); None: real CLIP
    per_class: dict[str, float] = field(default_factory=dict)  # class name -> accuracy percent
    confusion: np.ndarray | None = None  # [C, C] counts, rows = true class
    class_names: list[str] = field(default_factory=list)  # [C], order of confusion rows
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # e.g. base / novel / harmonic for base2novel
    coverage: dict = field(default_factory=dict)  # split -> listed / present / failed / used (cachekit.coverage)
    templates: str | None = None  # the prompt set of the class text read (cachekit.templates); None: no text

    def __post_init__(self) -> None:
        if self.confusion is not None:
            self.confusion = np.asarray(self.confusion)
            c = self.confusion
            if c.ndim != 2 or c.shape[0] != c.shape[1]:
                raise InputError(f"confusion matrix must be square [C, C], got shape {c.shape}")
            if self.class_names and len(self.class_names) != c.shape[0]:
                raise InputError(
                    f"confusion matrix has {c.shape[0]} classes but class_names has "
                    f"{len(self.class_names)}"
                )

    def base_novel(self, digits: int | None = None) -> dict:
        """A base-to-novel result's parts, each ``[accuracy, ci95]``: ``base``, ``novel`` and ``hm``
        (their harmonic mean); rounded to ``digits`` when given."""
        x = self.extra
        if "novel" not in x:
            raise InputError(f"a {self.protocol} result has no base and novel parts")
        r = (lambda v: float(v)) if digits is None else (lambda v: round(float(v), digits))
        return {"base": [r(x["base"]), r(x["base_ci95"])], "novel": [r(x["novel"]), r(x["novel_ci95"])],
                "hm": [r(self.accuracy), r(self.ci95)]}

    def to_dict(self) -> dict:
        """Plain-JSON dict (numpy values converted; confusion as nested lists or None)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> EvalResult:
        """Inverse of :meth:`to_dict` (unknown keys are an :class:`InputError`)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown result fields {unknown}; allowed: {sorted(names)}")
        d = dict(d)
        if d.get("confusion") is not None:
            d["confusion"] = np.asarray(d["confusion"])
        try:
            return cls(**d)
        except TypeError as err:
            raise InputError(f"incomplete result record: {err}") from err


def _plain(x):
    """numpy / nested containers -> JSON-native values."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def _cell(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.2f}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def _extra_text(extra: dict) -> str:
    return ", ".join(f"{k}={_cell(_plain(v))}" for k, v in extra.items())


def markdown_table(results: Sequence[EvalResult]) -> str:
    """Markdown: one table per protocol (rows numbered), then the notes by row number."""
    if not results:
        return "_no results_\n"
    protocols = list(dict.fromkeys(r.protocol for r in results))
    with_extra = any(r.extra for r in results)
    head = ["#", "protocol", "method", "metric", "ways", "shots", "episodes", "videos", "classes", "accuracy",
            "± episode CI", "± video CI"]
    if with_extra:
        head.append("extra")
    lines: list[str] = []
    overlaps = list(dict.fromkeys(r.overlap for r in results if r.overlap))
    if overlaps:
        lines += ["**NOT A HELD-OUT RESULT (--allow-overlap):** " + "; ".join(overlaps), ""]
    encoders = list(dict.fromkeys(r.encoder for r in results if r.encoder))
    if encoders:
        lines += ["**Encoder:** " + "; ".join(encoders) + ".", ""]
    prompts = list(dict.fromkeys(r.templates for r in results if r.templates))
    if prompts:
        lines += ["**Prompts (class text):** " + "; ".join(prompts) + ".", ""]
    if results[0].coverage:
        from .coverage import coverage_lines

        lines += ["**Coverage:** " + "; ".join(coverage_lines(results[0].coverage)) + ".", ""]
    if len(protocols) > 1:
        lines += ["Numbers from different protocols are not comparable.", ""]
    for proto in protocols:
        if len(protocols) > 1:
            lines += [f"### {_cell(proto)}", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, r in enumerate(results, start=1):
            if r.protocol != proto:
                continue
            row = [
                str(i),
                _cell(r.protocol),
                _cell(r.method),
                _cell(r.metric),
                _cell(r.ways),
                _cell(r.shots),
                _cell(r.episodes),
                _cell(r.videos),
                _cell(r.classes),
                f"{r.accuracy:.2f}",
                f"{r.ci95:.2f}",
                _cell(r.video_ci95),
            ]
            if with_extra:
                row.append(_cell(_extra_text(r.extra)) if r.extra else "")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    noted = [(i, n) for i, r in enumerate(results, start=1) for n in r.notes]
    if noted:
        lines += ["Notes:", ""]
        lines += [f"- [{i}] {n}" for i, n in noted]
        lines.append("")
    return "\n".join(lines)


def _slug(*parts) -> str:
    text = "_".join(str(p) for p in parts if p is not None)
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "result"


def _plot_name(kind: str, n: int, total: int, *parts) -> str:
    """``<kind>.png`` when it is the only plot of its kind, else ``<kind>_<nn>_<slug of parts>.png``."""
    return f"{kind}.png" if total == 1 else f"{kind}_{n:02d}_{_slug(*parts)}.png"


def _plot_confusion(path: Path, r: EvalResult) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(r.confusion, dtype=np.float64)  # [C, C]
    c = counts.shape[0]
    rows = counts.sum(axis=1, keepdims=True)  # [C, 1]
    frac = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)  # [C, C] row-normalised
    side = min(4.0 + 0.25 * c, 24.0)
    fig = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="fraction of the true class's items")
    names = r.class_names or [str(i) for i in range(c)]
    if c <= 60:
        ax.set_xticks(range(c), labels=names, rotation=90, fontsize=7)
        ax.set_yticks(range(c), labels=names, fontsize=7)
    if c <= 15:
        for i in range(c):
            for j in range(c):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    shots = "" if r.shots is None else f", {r.shots}-shot"
    ax.set_title(f"{r.method} ({r.protocol}{shots}): {r.accuracy:.2f}%")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def _shot_groups(results: Sequence[EvalResult]) -> list[list[EvalResult]]:
    """Groups of results that differ only in shots (and method): >= 2 distinct shot values."""
    groups: dict[tuple, list[EvalResult]] = {}
    for r in results:
        if r.shots is None:
            continue
        groups.setdefault((r.protocol, r.metric, r.ways, r.queries), []).append(r)
    return [g for g in groups.values() if len({r.shots for r in g}) >= 2]


def _plot_vs_shots(path: Path, group: list[EvalResult]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for method in dict.fromkeys(r.method for r in group):
        pts = sorted((r.shots, r.accuracy, r.ci95) for r in group if r.method == method)
        k, acc, ci = (list(v) for v in zip(*pts))
        ax.errorbar(k, acc, yerr=ci, marker="o", capsize=3, label=method)
    shots = sorted({r.shots for r in group})
    if shots[0] > 0 and shots[-1] / shots[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(shots, labels=[str(s) for s in shots])
    ax.minorticks_off()
    first = group[0]
    ways = "all-way" if first.ways is None else f"{first.ways}-way"
    ax.set_title(f"{first.protocol}, {ways}")
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel(f"{first.metric} (%), error bar = 95% CI")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def write_report(out_dir: str | Path, results: Sequence[EvalResult]) -> list[Path]:
    """Write results.json, results.md, per_class.csv and the plots into ``out_dir``.

    Plots: ``confusion.png`` per result with a confusion matrix (``confusion_<n>_<slug>.png`` when
    several have one) and ``accuracy_vs_shots.png`` per group of results that differ only in shots
    and method (suffixed likewise when there are several groups). Returns the written paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    path = out / "results.json"
    encoders = list(dict.fromkeys(r.encoder for r in results if r.encoder))
    doc = {"encoder": "; ".join(encoders) or None, "results": [r.to_dict() for r in results]}
    path.write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    written.append(path)

    path = out / "results.md"
    path.write_text(markdown_table(results), encoding="utf-8")
    written.append(path)

    path = out / "per_class.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["result", "protocol", "method", "ways", "shots", "class", "accuracy"])
        for i, r in enumerate(results, start=1):
            for name, acc in r.per_class.items():
                w.writerow([i, r.protocol, r.method, _csv(r.ways), _csv(r.shots), name,
                            f"{float(acc):.4f}" if math.isfinite(float(acc)) else "nan"])
    written.append(path)

    with_conf = [(i, r) for i, r in enumerate(results, start=1) if r.confusion is not None]
    for i, r in with_conf:
        path = out / _plot_name("confusion", i, len(with_conf), r.protocol, r.method,
                                None if r.shots is None else f"{r.shots}shot")
        _plot_confusion(path, r)
        written.append(path)

    groups = _shot_groups(results)
    for n, g in enumerate(groups, start=1):
        ways = "all" if g[0].ways is None else f"{g[0].ways}way"
        path = out / _plot_name("accuracy_vs_shots", n, len(groups), g[0].protocol, ways)
        _plot_vs_shots(path, g)
        written.append(path)
    return written


def _csv(x) -> str:
    return "" if x is None else str(x)


__all__ = ["EvalResult", "markdown_table", "write_report"]
