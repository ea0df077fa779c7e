"""Dagster objects by concern. They stay thin: the work lives in `steps`, `store`, `text` and `providers`."""
