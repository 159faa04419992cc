"""Where the processes are assembled: the embedded proxy, the gRPC server alone, the REST shim
alone in front of gRPC servers, and the job workers.

This package composes the others (the gRPC core in :mod:`server`, spiff's HTTP dialect in
:mod:`rest_shim`, the job backends in :mod:`jobs`) and nothing imports it.
"""
