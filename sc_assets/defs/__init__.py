"""The declared studies: one folder per study, each with a ``defs.yaml`` of type
``sc_assets.ScRnaSeqStudy`` (``dg scaffold defs sc_assets.ScRnaSeqStudy <name>``, README
"Many studies"). The default study, configured from the environment, needs no folder here."""
