"""The software-defined assets.

raw_count_matrix (observed files) -> sample_adata (one partition per sample, checked)
-> merged_adata; reference_genes -> sample_adata (the gene list samples are checked against).
"""

from dagster import AssetsDefinition, AssetSpec

from sc_assets.assets.merged import build_merged_adata, merged_adata
from sc_assets.assets.raw import build_raw_count_matrix, raw_count_matrix
from sc_assets.assets.reference import build_reference_genes, reference_genes
from sc_assets.assets.samples import build_sample_adata, sample_adata
from sc_assets.study import StudyKeys


def build_assets(study: StudyKeys) -> list[AssetsDefinition | AssetSpec]:
    """A study's four assets (the default study's are also importable by name)."""
    return [
        build_raw_count_matrix(study),
        build_reference_genes(study),
        build_sample_adata(study),
        build_merged_adata(study),
    ]


__all__ = [
    "build_assets",
    "merged_adata",
    "raw_count_matrix",
    "reference_genes",
    "sample_adata",
]
