"""Render check results as a Markdown and a self-contained HTML report.

Pure rendering: the caller gathers the results (from the Dagster instance, or from
:mod:`sc_assets.core.validation` directly) into :class:`Report` and picks the folder.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sc_assets.core.atomic import atomic_path

STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "warn": "⚠️ warn", "missing": "– none"}


@dataclass(frozen=True)
class CheckCell:
    """One check's latest result, as the report shows it."""

    status: str
    """``pass``, ``fail``, ``warn`` or ``missing`` (never evaluated)."""
    summary: str = ""
    description: str = ""


@dataclass(frozen=True)
class ReportRow:
    """One sample (or the merged data): its checks and, optionally, its QC plot."""

    name: str
    checks: dict[str, CheckCell]
    note: str = ""
    """Why the row has no results, e.g. the error of a failed run."""
    plot_png: bytes | None = None


@dataclass(frozen=True)
class Report:
    title: str
    sample_checks: Sequence[str]
    samples: Sequence[ReportRow]
    merged_checks: Sequence[str]
    merged: ReportRow
    generated: str = ""
    notes: Sequence[str] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when no ERROR check failed and every sample and the merge have results."""
        rows = [*self.samples, self.merged]
        return all(
            not row.note and all(cell.status in ("pass", "warn") for cell in row.checks.values())
            for row in rows
        )

    @property
    def failures(self) -> list[str]:
        """``"<row>: <check> — <description>"`` for every failed ERROR check or failed run."""
        lines = []
        for row in [*self.samples, self.merged]:
            if row.note:
                lines.append(f"{row.name}: {row.note}")
            lines += [
                f"{row.name}: {name} — {cell.description}"
                for name, cell in row.checks.items()
                if cell.status == "fail"
            ]
        return lines


@dataclass(frozen=True)
class WrittenReport:
    markdown_path: Path
    html_path: Path
    ok: bool


def write_report(report: Report, out_dir: Path) -> WrittenReport:
    """Write ``report.md`` (plots as PNGs in ``plots/``) and a self-contained ``report.html``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = out_dir / "plots"
    plot_files = {}
    for row in report.samples:
        if row.plot_png:
            plots.mkdir(exist_ok=True)
            path = plots / f"{row.name}.png"
            with atomic_path(path) as tmp:
                tmp.write_bytes(row.plot_png)
            plot_files[row.name] = path.relative_to(out_dir).as_posix()
    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(render_markdown(report, plot_files), encoding="utf-8")
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(report), encoding="utf-8")
    return WrittenReport(markdown_path, html_path, report.ok)


def render_markdown(report: Report, plot_files: dict[str, str]) -> str:
    """The report as Markdown; ``plot_files`` maps a row name to its PNG's relative path."""
    lines = [f"# {report.title}", ""]
    if report.generated:
        lines += [f"Generated {report.generated}.", ""]
    lines += [f"**{'All ERROR checks pass.' if report.ok else 'Some ERROR checks fail.'}**", ""]
    lines += [f"- {failure}" for failure in report.failures] + [""] * bool(report.failures)
    lines += ["## Samples", ""]
    lines += _markdown_table(report.sample_checks, report.samples)
    lines += ["", "## Merged data", ""]
    lines += _markdown_table(report.merged_checks, [report.merged])
    if report.notes:
        lines += ["", *[f"> {note}" for note in report.notes]]
    if plot_files:
        lines += ["", "## QC plots", ""]
        for name, rel in plot_files.items():
            lines += [f"### {name}", "", f"![QC plots of {name}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _markdown_table(checks: Sequence[str], rows: Sequence[ReportRow]) -> list[str]:
    lines = ["| sample | " + " | ".join(checks) + " |", "|---" * (len(checks) + 1) + "|"]
    for row in rows:
        if row.note and not row.checks:
            cells = [row.note.replace("|", "\\|")] + [""] * (len(checks) - 1)
        else:
            cells = [_cell_text(row.checks.get(name)) for name in checks]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def _cell_text(cell: CheckCell | None) -> str:
    cell = cell or CheckCell("missing")
    text = STATUS_MARK[cell.status] + (f" ({cell.summary})" if cell.summary else "")
    return text.replace("|", "\\|")


def render_html(report: Report) -> str:
    """The report as one HTML file with inline CSS and the plots embedded as data URIs."""
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
    ]
    if report.generated:
        parts.append(f"<p class='muted'>Generated {esc(report.generated)}.</p>")
    verdict = "All ERROR checks pass." if report.ok else "Some ERROR checks fail."
    parts.append(f"<p class='{'ok' if report.ok else 'bad'}'><b>{verdict}</b></p>")
    if report.failures:
        parts.append("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in report.failures) + "</ul>")
    parts += ["<h2>Samples</h2>", _html_table(report.sample_checks, report.samples)]
    parts += ["<h2>Merged data</h2>", _html_table(report.merged_checks, [report.merged])]
    parts += [f"<blockquote>{esc(note)}</blockquote>" for note in report.notes]
    plotted = [row for row in report.samples if row.plot_png]
    if plotted:
        parts.append("<h2>QC plots</h2>")
        for row in plotted:
            data = base64.b64encode(row.plot_png).decode()
            parts.append(
                f"<h3>{esc(row.name)}</h3><img alt='QC plots of {esc(row.name)}' "
                f"src='data:image/png;base64,{data}'>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(checks: Sequence[str], rows: Sequence[ReportRow]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(name)}</th>" for name in checks)
    body = []
    for row in rows:
        if row.note and not row.checks:
            cells = f"<td class='fail' colspan='{len(checks)}'>{esc(row.note)}</td>"
        else:
            cells = ""
            for name in checks:
                cell = row.checks.get(name) or CheckCell("missing")
                cells += (
                    f"<td class='{cell.status}' title='{esc(cell.description)}'>"
                    f"{esc(STATUS_MARK[cell.status])}<br><small>{esc(cell.summary)}</small></td>"
                )
        body.append(f"<tr><th>{esc(row.name)}</th>{cells}</tr>")
    return f"<table><tr><th>sample</th>{head}</tr>{''.join(body)}</table>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
td.pass{background:#e8f5e9}td.fail{background:#ffebee}td.warn{background:#fff8e1}
td.missing{background:#f5f5f5}.ok{color:#2e7d32}.bad{color:#c62828}.muted{color:#777}
img{max-width:100%}
"""
