"""How runs execute their steps (EMBEDDINGS_RUN_EXECUTOR, `config.run_executor`): in the run's own process by
default. A tenant's run is one chain (blocks -> chunks -> embeddings), so a process per step buys no parallelism
and costs a fresh interpreter and code-location load per step, most of a new row's wait (bench/freshness.py)."""

import dagster as dg

from ..config import run_executor


@dg.definitions
def executor() -> dg.Definitions:
    chosen = dg.in_process_executor if run_executor() == "in_process" else dg.multiprocess_executor
    return dg.Definitions(executor=chosen)
