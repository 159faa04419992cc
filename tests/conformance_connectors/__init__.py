"""The Python side of the cross-language conformance cases (protos/spiff/connector/conformance):
a connector package for ``CONNECTOR_PROXY_CONNECTORS=tests.conformance_connectors``."""
