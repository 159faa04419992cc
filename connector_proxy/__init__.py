"""Where the processes are assembled: the embedded proxy, the gRPC server alone, the REST shim
alone in front of gRPC servers, and the job workers.

This package composes the others (the gRPC core in :mod:`server`, spiff's HTTP dialect in
:mod:`rest_shim`, the job backends in :mod:`jobs`) and nothing imports it. The command line for
people, ``connector-proxy`` (:mod:`connector_proxy.cli`), lives here too: it composes the shim's
decoder and the core's reflection client.
"""
