"""Deploying the configuration onto a node: render -> validate -> switch -> reload -> probe,
else roll back (SPEC §4).

- ``plan``: a template rendered into files, hashed and diffed against the live generation
  (``Plan``), and the component checkers run on it;
- ``store``: the generations on disk (``GenerationStore``): materialise, write, switch the
  ``current`` symlink, prune, the live manifest, drift;
- ``runtime``: the components' daemons (``ComponentRuntime``): start, reload, stop, probe;
  shared by the pipeline, the components service and the node agent;
- ``pipeline``: the stages of a deploy and of a rollback by hand under one cleanup
  mechanism, returning a ``DeployOutcome``;
- ``backend``: how daemons are run (directly, or as systemd units).
"""
