"""Server reflection of everything the gRPC port serves, the upstreams' services included, as
they change: each upstream's files live in a descriptor pool of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from google.protobuf import descriptor, descriptor_pool
from grpc_reflection.v1alpha._async import ReflectionServicer

__all__ = ["LiveReflection"]


class _Pools:
    """The lookups the reflection servicer makes, tried in the local pool, then each upstream's."""

    def __init__(self, pools: Callable[[], Sequence[descriptor_pool.DescriptorPool]]) -> None:
        self._pools = pools

    def _each(self) -> Iterator[descriptor_pool.DescriptorPool]:
        yield descriptor_pool.Default()
        yield from self._pools()

    def _first(self, lookup: Callable[[descriptor_pool.DescriptorPool], Any]) -> Any:
        for pool in self._each():
            try:
                return lookup(pool)
            except KeyError:
                continue
        raise KeyError

    def FindFileByName(self, name: str) -> Any:  # noqa: N802 - the pool's API
        return self._first(lambda pool: pool.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> Any:  # noqa: N802
        return self._first(lambda pool: pool.FindFileContainingSymbol(symbol))

    def FindMessageTypeByName(self, name: str) -> Any:  # noqa: N802
        return self._first(lambda pool: pool.FindMessageTypeByName(name))

    def FindExtensionByNumber(self, message: descriptor.Descriptor, number: int) -> Any:  # noqa: N802
        return message.file.pool.FindExtensionByNumber(message, number)

    def FindAllExtensions(self, message: descriptor.Descriptor) -> Any:  # noqa: N802
        return message.file.pool.FindAllExtensions(message)


class LiveReflection(ReflectionServicer):  # type: ignore[misc]  # grpc_reflection is untyped
    """grpc's asyncio reflection servicer over a changing set of services and pools."""

    def __init__(
        self,
        service_names: Callable[[], Sequence[str]],
        pools: Callable[[], Sequence[descriptor_pool.DescriptorPool]],
    ) -> None:
        # The base class keeps a fixed tuple and one pool; both are looked up per request here.
        self._names = service_names
        self._pool = _Pools(pools)

    @property
    def _service_names(self) -> tuple[str, ...]:  # read by the base class's list_services
        return tuple(sorted(self._names()))
