"""sc-assets: single-cell count matrices as Dagster software-defined assets.

``sc_assets.ScRnaSeqStudy`` (the study component of ``defs.yaml`` files) is imported on first
use, so that ``sc_assets.core`` stays free of Dagster for those who only need it.
"""

__all__ = ["ScRnaSeqStudy"]


def __getattr__(name: str):
    if name == "ScRnaSeqStudy":
        from sc_assets.component import ScRnaSeqStudy

        return ScRnaSeqStudy
    raise AttributeError(f"module 'sc_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
