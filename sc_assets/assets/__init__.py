"""The software-defined assets.

raw_count_matrix (observed files) -> sample_adata (one partition per sample, checked)
-> merged_adata; reference_genes -> sample_adata (the gene list samples are checked against).
"""

from sc_assets.assets.merged import merged_adata
from sc_assets.assets.raw import raw_count_matrix
from sc_assets.assets.reference import reference_genes
from sc_assets.assets.samples import sample_adata

__all__ = ["merged_adata", "raw_count_matrix", "reference_genes", "sample_adata"]
