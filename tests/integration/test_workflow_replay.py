"""Recorded workflow histories still replay against today's workflow code (determinism)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


#: Every workflow with a recording, each job (VM snapshot, restore, service offering change,
#: data volume, volume snapshot and snapshot policy jobs included) once succeeding and once
#: unwinding, the queue with a terminated job (the `record-terminated-jobs` patch), a
#: RecurringSnapshot run, AddHost, a PowerStateSync run, and jobs submitted by signal.
EXPECTED = {
    "deploy_succeeds",
    "deploy_retries_next_host",
    "deploy_fails_and_unwinds",
    *(
        f"{job}_{outcome}"
        for job in (
            *(
                f"{operation}_vm"
                for operation in (
                    "start",
                    "stop",
                    "reboot",
                    "destroy",
                    "recover",
                    "expunge",
                    "migrate",
                    "restore",
                    "scale",
                )
            ),
            *(f"{operation}_vm_snapshot" for operation in ("create", "revert_to", "delete")),
            *(
                f"{operation}_volume"
                for operation in ("create", "attach", "resize", "detach", "migrate", "delete")
            ),
            "create_snapshot",
            "create_volume_from_snapshot",
            "create_template_from_snapshot",
            "revert_snapshot",
            "delete_snapshot",
            "create_snapshot_policy",
            "delete_snapshot_policies",
        )
        for outcome in ("succeeds", "fails_and_unwinds")
    ),
    "recurring_snapshot_runs",
    "vm_queue_lifecycle",
    "vm_queue_terminated_job",
    "add_host_succeeds",
    "power_state_sync_two_passes",
    # VM HA: a pass that restarts a crashed HA VM (the `vm-ha-restart` patch), its alert archived.
    "power_state_sync_restarts_crashed_ha_vm",
    "archive_alert_succeeds",
    # Submitted by the queue's `enqueue` signal; cancelled through the update and Temporal's
    # cancel (the `close-cancelled-as-canceled` patch).
    "deploy_waits_for_its_turn",
    "start_vm_cancelled",
    "vm_queue_by_enqueue",
}


def test_there_are_recorded_histories_to_replay() -> None:
    assert len(HISTORIES) >= len(EXPECTED) == 63
    missing = EXPECTED - {p.stem for p in HISTORIES}
    assert not missing, f"record them: python -m tests.integration.record_histories ({missing})"


@pytest.fixture(scope="module")
async def replayed() -> dict[str, Exception | None]:
    """Every recording replayed by one replayer: starting one (and validating every workflow
    in its sandbox) per history cost a few seconds each, minutes for them all."""

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for path in HISTORIES:
            yield WorkflowHistory.from_json(path.stem, path.read_text())

    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    outcomes: dict[str, Exception | None] = {}
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            outcomes[result.history.workflow_id] = result.replay_failure
    return outcomes


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_a_recorded_history_replays_without_nondeterminism(
    path: Path, replayed: dict[str, Exception | None]
) -> None:
    assert path.stem in replayed, f"{path.stem} was not replayed"
    assert replayed[path.stem] is None, f"{path.stem}: {replayed[path.stem]!r}"
