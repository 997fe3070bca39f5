"""The REST API keeps its shape: the OpenAPI document the app serves matches the committed
snapshot (tests/e2e/openapi.json): every path and method, their parameters, request bodies,
response statuses and the schemas they reference (operation ids included, since generated
clients are named after them).

A refactor of the routers must leave the document as it was. A change of the API made on
purpose regenerates the snapshot, and the diff of openapi.json is then reviewed with the change:

    .venv/bin/python -m tests.e2e.test_openapi_shape --write

The app is built as the e2e stack builds it (`create_app`), but never served: the document
comes from the routes alone, so the services it would use stay unset.
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any

from api.app import create_app
from api.services import CloudServices

SNAPSHOT = Path(__file__).with_name("openapi.json")
#: The parts of the document that are the API's shape (not its title, version or prose).
SHAPE = ("paths", "components")


def current_shape() -> dict[str, Any]:
    services = CloudServices(cloud=None, reads=None, temporal=None, task_queue="openapi")  # type: ignore[arg-type]
    document = create_app(services).openapi()
    return {part: document.get(part, {}) for part in SHAPE}


def _render(shape: dict[str, Any]) -> str:
    return json.dumps(shape, indent=2, sort_keys=True) + "\n"


def test_the_openapi_document_keeps_its_committed_shape() -> None:
    committed = SNAPSHOT.read_text()
    now = _render(current_shape())
    if now != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                now.splitlines(keepends=True),
                "tests/e2e/openapi.json (committed)",
                "the app's document now",
                n=2,
            )
        )
        raise AssertionError(
            "the OpenAPI document changed; if on purpose, regenerate the snapshot with "
            "`python -m tests.e2e.test_openapi_shape --write` and review its diff:\n" + diff
        )


def test_the_snapshot_covers_every_route_of_the_api() -> None:
    """The comparison means something only if the snapshot holds the whole API."""
    paths = json.loads(SNAPSHOT.read_text())["paths"]
    assert "/v1/virtual-machines/{vm_id}/start" in paths
    assert "/v1/volumes/{volume_id}/resize" in paths
    assert "/v1/snapshots/{snapshot_id}/templates" in paths
    operations = sum(len(methods) for methods in paths.values())
    assert operations > 60, f"only {operations} operations in the snapshot"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.e2e.test_openapi_shape --write")
    SNAPSHOT.write_text(_render(current_shape()))
    print(f"wrote {SNAPSHOT}")
