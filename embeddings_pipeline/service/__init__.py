"""The HTTP service, `embeddings-pipeline serve`: thin over `search/`, `pipeline.model_change` and `providers/`.

`app.py` routes and `create_app`; `auth.py` tokens; `ratelimit.py` per-token buckets; `retrieval.py` /v1/search;
`plans.py` each tenant's serving plan (model, chunk set) remembered for a few seconds; `listen.py` the NOTIFY
listener that forgets revoked tokens and switched plans at once; `pool.py` the connection pool; `embeddings.py`
/v1/embeddings; `counts.py` + `metrics.py` /metrics; `client.py` the CLI's client of a running service. Nothing
here imports torch at import time.
"""
