"""Helpers for the tests that talk to collector_node over real services."""

from __future__ import annotations

import time
from typing import Any


def call(
    node: Any, srv_type: Any, name: str, request: Any, timeout: float = 60.0, wait_s: float = 20.0
) -> Any:
    """Call a service from a thread other than the executor's; TimeoutError if it is missing or silent."""
    client = node.create_client(srv_type, name)
    if not client.wait_for_service(timeout_sec=wait_s):
        raise TimeoutError(f"service {name} not available")
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} did not answer")
        time.sleep(0.02)
    return future.result()
