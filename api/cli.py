"""The Stratus command-line client: the REST API from a terminal.

`STRATUS_API_URL` (default http://127.0.0.1:8080) and `STRATUS_API_KEY` (default: the admin key
that `stratus up` saved under .stratus/) say where and who.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

console = Console()
vm_app = typer.Typer(help="Virtual machines.", no_args_is_help=True)
job_app = typer.Typer(help="Jobs.", no_args_is_help=True)
inventory_app = typer.Typer(
    help="Zones, offerings, templates, networks, hosts.", no_args_is_help=True
)


def client() -> httpx.Client:
    url = os.environ.get("STRATUS_API_URL", "http://127.0.0.1:8080")
    key = os.environ.get("STRATUS_API_KEY")
    if key is None:
        key_file = Path(os.environ.get("STRATUS_STATE_DIR", ".stratus")) / "admin-api-key"
        key = key_file.read_text().strip() if key_file.exists() else ""
    return httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30)


def checked(response: httpx.Response) -> Any:
    """The answer's JSON; a refusal is printed (status, then each `loc: msg`) and exits 1.
    What the API says is printed as text, never read as rich markup: a message may echo
    brackets from the request."""
    if response.is_error:
        console.print(f"[red]{response.status_code}[/red]", end=" ")
        console.print(refusal_text(response), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    return response.json() if response.content else None


def refusal_text(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text
    if not isinstance(detail, list):
        return str(detail)
    return "; ".join(
        f"{'.'.join(str(part) for part in item.get('loc', []))}: {item.get('msg', '')}"
        if isinstance(item, dict)
        else str(item)
        for item in detail
    )


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows as a table; piped or redirected (no terminal to fit), every value is printed whole
    rather than cut to the 80 columns a terminal would have, so it can be read and searched."""
    out = Table(*columns)
    for row in rows:
        out.add_row(*(str(row.get(c, "")) for c in columns))
    if console.is_terminal:
        console.print(out)
        return
    wide = Console(file=console.file, width=100_000, color_system=None)
    Console(file=console.file, width=wide.measure(out).maximum, color_system=None).print(out)


@vm_app.command("deploy")
def deploy(
    zone: str = typer.Option(..., help="zone id"),
    offering: str = typer.Option(..., help="service offering id"),
    template: str = typer.Option(..., help="template id"),
    name: str | None = typer.Option(None, help="host name"),
    network: str | None = typer.Option(None, help="guest network id"),
    wait: bool = typer.Option(True, help="wait for the job to end"),
) -> None:
    """Deploy a VM and (by default) follow its job to the end."""
    body = {"zone_id": zone, "service_offering_id": offering, "template_id": template}
    if name:
        body["name"] = name
    if network:
        body["network_id"] = network
    with client() as http:
        accepted = checked(http.post("/v1/virtual-machines", json=body))
        console.print(f"job {accepted['job_id']} for VM {accepted['virtual_machine_id']}")
        console.print(f"[dim]{accepted['temporal_url']}[/dim]")
        if wait:
            follow(http, accepted["job_id"])


@vm_app.command("list")
def list_vms(zone: str | None = None, state: str | None = None, limit: int = 50) -> None:
    params = {"limit": limit, "consistent": "true", "zone_id": zone, "state": state}
    with client() as http:
        found = checked(http.get("/v1/virtual-machines", params=_present(params)))
    table(found["data"], ["id", "name", "state", "ip_address", "host_id", "created"])
    console.print(f"{found['count']} in all")


@job_app.command("show")
def show_job(job_id: str) -> None:
    with client() as http:
        job = checked(http.get(f"/v1/jobs/{job_id}", params={"consistent": "true"}))
    for key, value in job.items():
        console.print(f"[bold]{key:>13}[/bold]  {value}")


@job_app.command("wait")
def wait_job(job_id: str) -> None:
    with client() as http:
        follow(http, job_id)


def follow(http: httpx.Client, job_id: str, timeout: float = 600) -> None:
    last_step = None
    deadline = time.monotonic() + timeout
    with console.status("waiting") as spinner:
        while time.monotonic() < deadline:
            job = checked(http.get(f"/v1/jobs/{job_id}", params={"consistent": "true"}))
            if job["step"] != last_step and job["step"]:
                last_step = job["step"]
                spinner.update(last_step)
                console.print(f"  {last_step}")
            if job["jobstatus"] != 0:
                colour = "green" if job["status"] == "succeeded" else "red"
                console.print(
                    f"[{colour}]{job['status']}[/{colour}]",
                    job["result"] or "",
                    job["error_code"] or "",
                    job["error_text"] or "",
                )
                if job["status"] != "succeeded":
                    raise typer.Exit(1)
                return
            time.sleep(0.5)
    console.print("[yellow]still running[/yellow]")
    raise typer.Exit(2)


@inventory_app.command("list")
def list_inventory(
    kind: str = typer.Argument(
        ..., help="zones, networks, service-offerings, disk-offerings, templates, hosts, ..."
    ),
) -> None:
    with client() as http:
        found = checked(http.get(f"/v1/{kind}", params={"limit": 500}))
    table(found["data"], ["id", "name", "zone_id"])


def _present(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
