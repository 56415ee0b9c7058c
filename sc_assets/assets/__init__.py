"""The software-defined assets: reference_genes -> sample_adata (per sample) -> merged_adata."""

from sc_assets.assets.merged import merged_adata
from sc_assets.assets.reference import reference_genes
from sc_assets.assets.samples import sample_adata

__all__ = ["merged_adata", "reference_genes", "sample_adata"]
