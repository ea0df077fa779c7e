"""Dagster objects by concern, loaded as a folder by `definitions.py`. They stay thin: the work lives in the
Dagster-free `pipeline/` (steps, model-change policy, alerts), `store/`, `text/` and `providers/`."""
