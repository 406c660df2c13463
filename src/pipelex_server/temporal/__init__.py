"""Temporal execution mode: runs submitted as workflows, executed by ``pipelex-server worker`` processes.

``workflows`` is the deterministic part (it never imports the pipelex runtime); ``activities`` does the work;
``client`` connects; ``worker`` hosts them.
"""


def workflow_id_for(run_id: str) -> str:
    """The id of a run's workflow (what the 202 answer and the run document carry)."""
    return f"pipelex-run-{run_id}"
