"""Throwaway certificates for the TLS tests (trustme): a CA, a server certificate for localhost
and 127.0.0.1, a client certificate from the same CA and one from another CA, as files."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import grpc
import trustme


@dataclass(frozen=True)
class Pair:
    """A certificate file and its key file."""

    cert: str
    key: str


@dataclass(frozen=True)
class Files:
    ca: str  # the CA's certificate: what clients and servers trust
    server: Pair  # for localhost and 127.0.0.1
    client: Pair  # a client certificate from the same CA
    stranger: Pair  # a client certificate from another CA


def issue(ca: trustme.CA, directory: pathlib.Path, stem: str, *names: str) -> Pair:
    leaf = ca.issue_cert(*names)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return Pair(str(cert), str(key))


def certificate_files(directory: pathlib.Path, ca: trustme.CA, other_ca: trustme.CA) -> Files:
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return Files(
        ca=str(directory / "ca.pem"),
        server=issue(ca, directory, "server", "localhost", "127.0.0.1"),
        client=issue(ca, directory, "client", "spiff-connector-proxy"),
        stranger=issue(other_ca, directory, "stranger", "spiff-connector-proxy"),
    )


def client_credentials(ca_file: str, pair: Pair | None) -> grpc.ChannelCredentials:
    """A plain gRPC client's TLS credentials: trust ``ca_file``, present ``pair`` if given."""

    def read(path: str) -> bytes:
        return pathlib.Path(path).read_bytes()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca_file),
        private_key=read(pair.key) if pair else None,
        certificate_chain=read(pair.cert) if pair else None,
    )
