"""Reading a gRPC server's connector services by server reflection, over the upstream's own channel.

The client is asynchronous and uses the channel the calls use (its TLS and metadata included):
one connection per upstream for discovery, health and commands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

__all__ = ["INFRASTRUCTURE", "DiscoveryError", "Schema", "read_schema"]

# Services that are not connectors: gRPC's own, and the proxy's (spiff.proxy.v1.JobsService).
INFRASTRUCTURE = ("grpc.", "spiff.proxy.")


class DiscoveryError(Exception):
    """The server answered reflection, but not with a usable schema."""


@dataclass(frozen=True)
class Schema:
    """The connector services of one server and every file they need, as reflection gave them."""

    service_names: tuple[str, ...]
    files: tuple[bytes, ...] = field(repr=False)  # serialized FileDescriptorProtos, sorted

    @property
    def fingerprint(self) -> str:
        """Equal for equal schemas: a changed proto (a new command or parameter) changes it."""
        digest = hashlib.sha256()
        for name in self.service_names:
            digest.update(name.encode() + b"\0")
        for raw in self.files:
            digest.update(len(raw).to_bytes(8, "big") + raw)
        return digest.hexdigest()

    def services(self) -> list[descriptor.ServiceDescriptor]:
        """The services, resolved in a descriptor pool of their own (so two servers may each
        carry their own copy of a shared file, such as the spiff options).

        Raises:
            DiscoveryError: a file is missing or does not build.
        """
        protos = {p.name: p for p in map(descriptor_pb2.FileDescriptorProto.FromString, self.files)}
        pool = descriptor_pool.DescriptorPool()
        added: set[str] = set()

        def add(name: str, trail: tuple[str, ...] = ()) -> None:
            if name in added:
                return
            if name not in protos or name in trail:
                msg = f"{name} is missing or imports itself"
                raise DiscoveryError(msg)
            for dependency in protos[name].dependency:
                add(dependency, (*trail, name))
            pool.Add(protos[name])
            added.add(name)

        try:
            for name in sorted(protos):
                add(name)
            return [pool.FindServiceByName(name) for name in self.service_names]
        except (TypeError, KeyError) as exc:
            msg = f"the reflected schema does not build: {exc}"
            raise DiscoveryError(msg) from exc


async def read_schema(
    channel: grpc.aio.Channel, *, metadata: Sequence[tuple[str, str]] = (), timeout: float = 10.0
) -> Schema:
    """Lists the server's services and fetches the files that define them, with their imports.

    Raises:
        grpc.aio.AioRpcError: the server cannot be reached or does not offer reflection.
        DiscoveryError: its answers are incomplete.
    """
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(metadata=tuple(metadata), timeout=timeout)
    files: dict[str, bytes] = {}

    async def fetch(request: reflection_pb2.ServerReflectionRequest) -> None:
        response = await _ask(call, request)
        for raw in response.file_descriptor_response.file_descriptor_proto:
            files.setdefault(descriptor_pb2.FileDescriptorProto.FromString(raw).name, raw)

    try:
        listed = await _ask(call, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = sorted(
            s.name for s in listed.list_services_response.service if not s.name.startswith(INFRASTRUCTURE)
        )
        for name in names:
            await fetch(reflection_pb2.ServerReflectionRequest(file_containing_symbol=name))
        # Servers may send a file without its imports: ask for each missing one by name.
        while missing := _missing_imports(files):
            for name in sorted(missing):
                await fetch(reflection_pb2.ServerReflectionRequest(file_by_filename=name))
                if name not in files:
                    msg = f"reflection did not give {name}"
                    raise DiscoveryError(msg)
        await call.done_writing()
    finally:
        call.cancel()
    return Schema(tuple(names), tuple(sorted(files.values())))


async def _ask(
    call: Any, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    await call.write(request)
    response = await call.read()
    if response is grpc.aio.EOF:
        msg = "the server ended the reflection stream early"
        raise DiscoveryError(msg)
    if response.HasField("error_response"):
        error = response.error_response
        msg = f"reflection answered {error.error_code}: {error.error_message}"
        raise DiscoveryError(msg)
    answer: reflection_pb2.ServerReflectionResponse = response
    return answer


def _missing_imports(files: dict[str, bytes]) -> set[str]:
    needed = {
        dependency
        for raw in files.values()
        for dependency in descriptor_pb2.FileDescriptorProto.FromString(raw).dependency
    }
    return needed - files.keys()
