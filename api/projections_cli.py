"""`stratus projections`: see the read models' projections and mend a blocked one, through the
admin API (`/v1/projections`), so no operator needs SQL.

`status` exits 1 when a projection is not running, so it also serves as a check in scripts.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.text import Text

from api.cli import checked, client, console, table

projections_app = typer.Typer(
    help="Read-model projections: state, lag, and mending one blocked on an event.",
    no_args_is_help=True,
)


def _event(row: dict[str, Any]) -> str:
    event = row.get("blocking_event")
    if not event:
        return ""
    return f"{event['notification_id']} {event['topic']} {event['originator_id']}"


@projections_app.command("status")
def status() -> None:
    """Each projection's state, position and lag; for a blocked one, the event and the error."""
    with client() as http:
        rows = checked(http.get("/v1/projections"))["data"]
    columns = ["projection", "state", "position", "behind", "seconds_behind", "event", "attempts"]
    shown = [
        {c: "-" if value is None else value for c, value in {**row, "event": _event(row)}.items()}
        for row in rows
    ]
    table(shown, columns)
    stuck = [row for row in rows if row["state"] != "running"]
    for row in stuck:
        # The detail quotes a database error: printed as it is, never read as markup.
        line = Text.assemble((row["projection"], "red"), f" {row['state']}: {row['detail']}")
        console.print(line, soft_wrap=True)
        event = row.get("blocking_event")
        if row["state"] == "retrying" and event:
            console.print(
                f"  next attempt {row['next_attempt_at']}; to move past the event: "
                f"stratus projections skip {row['projection']} {event['notification_id']} "
                "--reason '...'",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
    if stuck:
        raise typer.Exit(1)


@projections_app.command("skip")
def skip(
    projection: str = typer.Argument(..., help="the projection, as `status` names it"),
    notification_id: int = typer.Argument(..., help="the event it is blocked on"),
    reason: str = typer.Option(..., "--reason", help="why it may be skipped (kept for audit)"),
) -> None:
    """Record that a projection skips the event it is blocked on (audited: who, when, why);
    the projector moves past it at once."""
    with client() as http:
        recorded = checked(
            http.post(
                f"/v1/projections/{projection}/skips",
                json={"notification_id": notification_id, "reason": reason},
            )
        )
    console.print(
        f"recorded: {recorded['projection']} skips event {recorded['notification_id']} "
        f"({recorded['event_topic']}), by {recorded['skipped_by']} at {recorded['skipped_at']}",
        soft_wrap=True,
    )


@projections_app.command("skips")
def skips(
    projection: str | None = typer.Argument(None, help="one projection (default: all)"),
) -> None:
    """The skips recorded: the audit trail of events projections moved past unwritten."""
    with client() as http:
        names = (
            [projection]
            if projection
            else [row["projection"] for row in checked(http.get("/v1/projections"))["data"]]
        )
        rows = [
            row
            for name in names
            for row in checked(http.get(f"/v1/projections/{name}/skips"))["data"]
        ]
    table(
        rows,
        [
            "projection",
            "notification_id",
            "event_topic",
            "skipped_by",
            "skipped_at",
            "applied_at",
            "reason",
        ],
    )


@projections_app.command("retry")
def retry(projection: str = typer.Argument(..., help="the projection to try again now")) -> None:
    """Try a blocked projection again now instead of after its backoff."""
    with client() as http:
        requested = checked(http.post(f"/v1/projections/{projection}/retry"))
    console.print(f"retry of {requested['projection']} requested at {requested['requested_at']}")
