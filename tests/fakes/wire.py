"""Shared plumbing for the in-process gRPC fakes of Cloud Run, Monitoring and Logging.

The real google-cloud clients talk to these servers over loopback (`grpc.insecure_channel`), so the
tests exercise the real request building, paging, LRO polling and error mapping. Each fake records
every request it receives and can inject faults by method (see `FaultPlan`).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc

# The gRPC status codes a fake can inject, by the names the issues use.
FAULT_CODES: dict[str, grpc.StatusCode] = {
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "ABORTED": grpc.StatusCode.ABORTED,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "INTERNAL": grpc.StatusCode.INTERNAL,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
}


@dataclass
class Fault:
    code: str | None  # a FAULT_CODES name, or None for "slow only"
    times: int = 1  # how many calls it affects; -1 for every call
    delay_s: float = 0.0  # a slow response: sleep before answering (or failing)
    message: str = "injected fault"


@dataclass
class FaultPlan:
    """Faults queued per gRPC method name (e.g. "UpdateService"). Thread-safe."""

    _queues: dict[str, deque[Fault]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, method: str, code: str | None, *, times: int = 1, delay_s: float = 0.0,
               message: str = "injected fault") -> None:
        if code is not None and code not in FAULT_CODES:
            raise ValueError(f"unknown fault code {code}")
        with self._lock:
            self._queues.setdefault(method, deque()).append(Fault(code, times, delay_s, message))

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()

    def apply(self, method: str, context: grpc.ServicerContext) -> None:
        """Called at the top of every fake handler: sleeps and/or aborts as planned."""
        with self._lock:
            queue = self._queues.get(method)
            fault = queue[0] if queue else None
            if fault is not None and fault.times != -1:
                fault.times -= 1
                if fault.times <= 0:
                    queue.popleft()  # type: ignore[union-attr]
        if fault is None:
            return
        if fault.delay_s:
            time.sleep(fault.delay_s)  # a slow response on the fake's side of the wire
        if fault.code is not None:
            context.abort(FAULT_CODES[fault.code], fault.message)


@dataclass
class RequestLog:
    """Every request a fake received, as (method, request message). Thread-safe."""

    entries: list[tuple[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, request: Any) -> None:
        with self._lock:
            self.entries.append((method, request))

    def of(self, method: str) -> list[Any]:
        with self._lock:
            return [r for m, r in self.entries if m == method]

    def count(self, method: str) -> int:
        return len(self.of(method))


def unary(service: str, method: str, handler: Callable[[Any, grpc.ServicerContext], Any],
          request_type: Any, response_type: Any) -> tuple[str, grpc.RpcMethodHandler]:
    """A unary handler for `service/method` with proto-plus or protobuf (de)serialisers."""
    deserialize = getattr(request_type, "deserialize", None) or request_type.FromString
    serialize = getattr(response_type, "serialize", None) or (lambda m: m.SerializeToString())
    return method, grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=deserialize, response_serializer=serialize)


def serve(handlers: dict[str, dict[str, grpc.RpcMethodHandler]], *, workers: int = 16) -> tuple[grpc.Server, int]:
    """Start a gRPC server on a free loopback port serving {service_name: {method: handler}}."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    for service_name, methods in handlers.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, methods),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
