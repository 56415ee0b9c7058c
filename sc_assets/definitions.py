"""The sc_assets code location (``dg``, ``dagster dev -w workspace.yaml`` and the CLI load it):
the default study, configured from the ``SC_ASSETS_*`` variables, and every study declared in
``sc_assets/defs/<study>/defs.yaml`` (see :mod:`sc_assets.location`)."""

from sc_assets.location import PROJECT_ROOT, build_definitions, project_definitions

__all__ = ["build_definitions", "defs"]

defs = project_definitions(PROJECT_ROOT)
