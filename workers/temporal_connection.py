"""Connecting to Temporal, and the search attributes every job carries."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from domain.job_requests import JobAttribute


async def connect(address: str, namespace: str = "default") -> Client:
    return await Client.connect(
        address, namespace=namespace, data_converter=pydantic_data_converter
    )


def search_attribute_flags() -> list[str]:
    """`temporal server start-dev` flags that register Stratus's search attributes."""
    flags = []
    for attribute in JobAttribute:
        flags += ["--search-attribute", f"{attribute.value}=Keyword"]
    return flags
