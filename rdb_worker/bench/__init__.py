"""rdb-bench: the batched rdb against the per-request pattern and the database floor.

One run measures, interleaved on the same private RabbitMQ and MariaDB, what a scheduler
tick costs through five variants (``variants``) on several workloads (``workloads``),
plus a scale-out run (``scaleout``), and writes a table, a JSON file and a PNG plot
(``report``, ``plot``). ``cli`` is the console script ``rdb-bench``. Benchmark-only
dependencies (celery, matplotlib) come with the ``bench`` extra.
"""
