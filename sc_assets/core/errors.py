"""Errors raised by the core when input data cannot be trusted."""

from __future__ import annotations

import os


class CountMatrixError(ValueError):
    """A count-matrix file that cannot be read as exact integer counts.

    The message always names the file, and the line (and column) where the problem was found
    when that is known, so a person can open the file and see it.

    Attributes
    ----------
    path
        The file that was being read.
    problem
        What is wrong, in plain words.
    line, column
        1-based position in the decompressed text, or ``None`` when not applicable
        (e.g. a broken gzip stream).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        problem: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        self.line = line
        self.column = column
        where = ""
        if line is not None:
            where = f", line {line}" + (f", column {column}" if column is not None else "")
        super().__init__(f"{self.path}{where}: {problem}")

    def __reduce__(self):  # keep the keyword arguments across process boundaries
        return (_rebuild, (self.path, self.problem, self.line, self.column))


def _rebuild(path, problem, line, column) -> CountMatrixError:
    return CountMatrixError(path, problem, line=line, column=column)


class SampleNameError(ValueError):
    """A file name that does not follow the GEO per-sample naming convention."""
