"""What the SQL connectors (postgres_v2, mysql) share, parametrized by a dialect; not a connector.

- ``dialect``: the ``Dialect`` protocol, the few things a database's SQL differs in.
- ``statements``: each command's parameters checked and built into a ``Plan``, in any dialect.
- ``column_types``: the tokenizer and parser shape of the strict column-type grammars.
- ``execution``: deadlines, statement timeouts, outcome log lines, rows in their JSON form.
- ``connections``: the parsed connection string (and its scrubbing) and the pool cache.

Each connector keeps its own grammar, error table, driver calls and value conversion.
"""
