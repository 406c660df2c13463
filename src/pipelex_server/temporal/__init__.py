"""Temporal execution mode: runs submitted as workflows, executed by ``pipelex-server worker`` processes.

``workflows`` is the deterministic part (it never imports the pipelex runtime); ``activities`` does the work;
``client`` connects; ``worker`` hosts them.
"""


def workflow_id_for(run_key: str) -> str:
    """The id of a run's workflow (what the 202 answer and the run document carry). It is made from the run's
    server-wide key, not its public id, so two callers' runs of the same public id have two workflows."""
    return f"pipelex-run-{run_key}"
