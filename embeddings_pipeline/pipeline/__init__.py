"""The Dagster-free core: the three steps, the model-change policy, ingest, backfill planning, alert delivery.

The Dagster defs, the CLI, the HTTP service, the benchmarks and the tests are equal clients of this package.
"""
