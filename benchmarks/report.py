"""Results of the sections, printed as compact tables and written as BENCHMARKS.md."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.measure import Measurement, median

PACKAGES = ("numpy", "scipy", "pandas", "anndata", "scanpy", "h5py", "numba", "isal", "dagster")


@dataclass
class Table:
    """A table of one section: the header and rows of already formatted cells."""

    header: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)

    def text(self) -> str:
        """Aligned plain-text columns, for stdout."""
        rows = [list(self.header), *map(list, self.rows)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.header))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )

    def markdown(self) -> str:
        """A Markdown table."""
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass(frozen=True)
class Check:
    """A target of the issue and whether this run met it."""

    target: str
    measured: str
    met: bool


@dataclass
class Section:
    """What one section measured: tables, targets, notes, and the raw numbers."""

    key: str
    title: str
    tables: list[tuple[str, Table]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    """Every process measured in the section, for its contention summary."""
    duration_s: float = float("nan")
    """How long the whole section took (set by the runner)."""

    def contention(self) -> str:
        """The load this section ran under."""
        if not self.measurements:
            return "no process measured"
        loads = [m.load_1min for m in self.measurements]
        others = [m.others_cpu for m in self.measurements]
        return (
            f"section took {self.duration_s:.0f} s; "
            f"load average (1 min) {min(loads):.2f}-{max(loads):.2f}; CPU used by other "
            f"processes during the measured runs: median {median(others):.2f}, "
            f"max {max(others):.2f} cores"
        )

    def text(self) -> str:
        """The section for stdout."""
        parts = [f"== {self.title} ==", f"({self.contention()})"]
        for caption, table in self.tables:
            parts += [caption, table.text(), ""]
        parts += [f"[{'met' if c.met else 'MISSED'}] {c.target}: {c.measured}" for c in self.checks]
        return "\n".join(parts)

    def markdown(self) -> str:
        """The section for BENCHMARKS.md."""
        parts = [f"## {self.title}", "", f"Load: {self.contention()}.", ""]
        for caption, table in self.tables:
            parts += [f"{caption}", "", table.markdown(), ""]
        if self.checks:
            parts += ["| target | measured | |", "|---|---|---|"]
            parts += [
                f"| {c.target} | {c.measured} | {'met' if c.met else '**missed**'} |"
                for c in self.checks
            ]
            parts.append("")
        parts += [f"- {note}" for note in self.notes]
        return "\n".join(parts).rstrip() + "\n"


def seconds(value: float) -> str:
    """Seconds with precision that suits the magnitude (``-`` for NaN)."""
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def megabytes(value: float) -> str:
    """Megabytes, no decimals (``-`` for NaN)."""
    return "-" if math.isnan(value) else f"{value:,.0f}"


def ratio(value: float) -> str:
    """A ratio such as ``21.3x`` (``-`` for NaN)."""
    return "-" if math.isnan(value) else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def machine() -> dict[str, str]:
    """The machine and software the numbers were measured on."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    info = {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": f"{mem_kib / 2**20:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
    }
    for package in PACKAGES:
        info[package] = importlib.metadata.version(package)
    return info


def markdown_document(
    *,
    command: str,
    date: str,
    duration_s: float,
    machine_info: dict[str, str],
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
    summary: str,
    sections: Sequence[Section],
) -> str:
    """BENCHMARKS.md."""
    start, end = loads
    versions = ", ".join(f"{k} {machine_info[k]}" for k in PACKAGES)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (`make bench`) on {date}; the run took "
        f"{duration_s / 60:.0f} min. CI runs `python -m benchmarks --smoke --out DIR`, the "
        "same code at a tiny size, which never writes this file. "
        "Each measured item is a fresh process (imports count, memory is per process); "
        "alternatives run interleaved (A B A B) and the tables give medians, with ratios "
        "computed within this run. Peak RSS is the largest process of the item's process "
        "tree (`wait4`), in MB (10^6 bytes).",
        "",
        "## Machine",
        "",
        f"- CPU: {machine_info['CPU']}, {machine_info['cores']} cores; RAM {machine_info['RAM']}; "
        f"{machine_info['OS']}",
        f"- Python {machine_info['Python']}; {versions}",
        "- Shared with other agents: the load average was "
        f"{start[0]:.2f} / {start[1]:.2f} / {start[2]:.2f} (1 / 5 / 15 min) at the start and "
        f"{end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f} at the end; each section gives the load "
        "it ran under and the CPU that other processes took during its measured runs.",
        "",
        "## Targets",
        "",
        "| section | target | measured | |",
        "|---|---|---|---|",
        *(
            f"| {s.title.split(':')[0]} | {c.target} | {c.measured} | "
            f"{'met' if c.met else '**missed**'} |"
            for s in sections
            for c in s.checks
        ),
        "",
        "## Where the time goes",
        "",
        summary,
        "",
    ]
    return "\n".join(lines) + "\n" + "\n".join(section.markdown() for section in sections)
