#!/bin/sh
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d):
# a database of its own for Dagster's tables, and pgvector in the pipeline's database.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<EOSQL
CREATE DATABASE "${DAGSTER_PG_DB:-dagster}";
CREATE EXTENSION IF NOT EXISTS vector;
EOSQL
