"""How the assets present themselves in the catalog: one owner, one domain tag."""

OWNERS = ["team:single-cell"]


def tags(stage: str) -> dict[str, str]:
    """Catalog tags of an asset at ``stage`` (source, reference, sample, merge)."""
    return {"domain": "scrna-seq", "stage": stage}
