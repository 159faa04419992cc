"""The proxy's benchmark: ``make bench`` (``python -m bench``).

It starts every system it measures on free loopback ports (the embedded proxy, a bare
Starlette floor with the same uvicorn settings, and a local HTTP target), drives them
with ``wrk -t1`` (a Python async client for gRPC), and reports medians of interleaved
rounds as ratios against the floor measured in the same run; see
``/work/shared/spec/perf-notes.md`` for the method and the anchors.

The remote path runs in the same rounds (``bench.remote``): one gRPC server process alone, with
the REST shim alone in front of it, and Envoy's gRPC-JSON transcoder (``bench.envoy``) in front of
the same server, next to the embedded ``/v1/do``; ``--remote-only`` runs just those three.

Then the jobs benchmark (``bench.jobs``; ``--no-jobs`` skips it): long-running commands in the
embedded job mode and the broker mode (RabbitMQ, Redis and taskiq workers; skipped when they are
not reachable, or with ``--no-broker``), interleaved over the same rounds and reported as ratios
broker / embedded.

``--soak`` runs the soak instead (``bench.soak``): one proxy process under 64 clients sending a mix
of every local command and malformed input for 10 minutes, one wrk run per window; it reports
errors (which must be 0), p99 and the proxy's RSS per window, and exits 1 on an error or RSS growth.
"""
