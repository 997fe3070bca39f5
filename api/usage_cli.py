"""`stratus usage`: usage records from a terminal, exported to a file with a progress bar.

The export streams the API's `/v1/usage-records/export` straight to the file, so its size is
bounded by the disk, not memory. The bar counts records against the listing's final records
(`count` less `provisional_count`: an export holds final records only).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from api.cli import checked, client, console, table

usage_app = typer.Typer(help="Usage records and billing exports.", no_args_is_help=True)


def _period(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}


def _filters(account: str | None, usage_type: str | None) -> dict[str, str]:
    found = {"account": account, "type": usage_type}
    return {k: v for k, v in found.items() if v is not None}


@usage_app.command("export")
def export(
    start: datetime = typer.Option(..., "--from", help="period start (ISO 8601)"),
    end: datetime = typer.Option(..., "--to", help="period end, exclusive (ISO 8601)"),
    format: str = typer.Option("csv", "--format", help="csv, json or ndjson"),
    output: Path | None = typer.Option(None, "--output", "-o", help="file to write"),
    account: str | None = typer.Option(None, help="account id (admins)"),
    usage_type: str | None = typer.Option(None, "--type", help="usage type id or name"),
) -> None:
    """Export usage records for a period to a file."""
    if format not in ("csv", "json", "ndjson"):
        raise typer.BadParameter("format must be csv, json or ndjson", param_hint="--format")
    params = {**_period(start, end), **_filters(account, usage_type)}
    target = output or Path(f"usage-{start:%Y%m%d}-{end:%Y%m%d}.{format}")
    with client() as http:
        listed = checked(http.get("/v1/usage-records", params={**params, "limit": 1}))
        total = listed["count"] - listed["provisional_count"]
        records = 0
        with (
            Progress(
                TextColumn("[bold]exporting"),
                BarColumn(),
                MofNCompleteColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress,
            http.stream(
                "GET",
                "/v1/usage-records/export",
                params={**params, "format": format},
                timeout=httpx.Timeout(30, read=None),
            ) as response,
        ):
            if response.is_error:
                response.read()
                checked(response)
            task = progress.add_task("records", total=total)
            with target.open("wb") as out:
                header_pending = format in ("csv", "json")
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    lines = chunk.count(b"\n")
                    if header_pending and lines:
                        lines -= 1  # the CSV header, or the JSON array's opening line
                        header_pending = False
                    records += lines
                    progress.update(task, completed=min(records, total))
    console.print(f"wrote {min(records, total)} records to {target}")


@usage_app.command("summary")
def summary(
    start: datetime = typer.Option(..., "--from", help="period start (ISO 8601)"),
    end: datetime = typer.Option(..., "--to", help="period end, exclusive (ISO 8601)"),
    account: str | None = typer.Option(None, help="account id (admins)"),
) -> None:
    """Quantity (and cost, with a tariff) per account and usage type, provisional usage (the
    open window so far) included and shown apart."""
    params = {**_period(start, end), **_filters(account, None)}
    with client() as http:
        found = checked(http.get("/v1/usage-records/summary", params=params))
    for entry in found:
        console.rule(f"{entry['account_name']} ({entry['account_id']})")
        table(
            entry["usage"],
            [
                "usage_type_name",
                "records",
                "usage",
                "gib_hours",
                "cost",
                "provisional_raw_usage_ms",
            ],
        )
        if entry["total_cost"] is not None:
            console.print(f"total {entry['total_cost']} {entry['currency']}")
        if entry["provisional"]:
            console.print(f"usage after {entry['final_until']} is provisional (so far)")
