"""The pipeline's stages as Prefect tasks over components, each keyed by a typed spec of exactly what it reads
(specs.py), with retries on I/O and a content cache (caching.py)."""
