"""Tenant-partitioned embedding pipeline: documents -> blocks -> chunks -> pgvector embeddings, run by Dagster."""

__version__ = "0.1.0"
