"""K2's Spark Structured Streaming jobs: bronze ingestion, silver validation, gold deduplication.

`k2_jobs.transforms` holds the pure DataFrame -> DataFrame functions; `bronze`, `silver`
and `gold` are thin I/O shells around them, runnable as Spark main files
(`python -m k2_jobs.bronze -f pipeline.yaml`) or through `k2 job LAYER -f pipeline.yaml`.
"""
