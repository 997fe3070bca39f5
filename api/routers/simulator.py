"""/v1/simulator/faults: make the simulator fail or delay an operation (configureSimulator).

Admin only. Each change is a short ConfigureSimulator job; the API waits for it, so the fault
is in force when the response arrives.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool
from temporalio.client import WorkflowFailureError
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from api.auth import AdminCaller
from api.dependencies import Services
from api.errors import ApiError, not_found
from api.models import Listing, SimulatorFaultCreate, SimulatorFaultPublic
from domain.errors import ErrorCode
from domain.host import Host
from domain.job_requests import JobAttribute, SimulatorFaultChange
from domain.simulator_fault import SIMULATOR_CONFIGURATION_ID, SimulatorConfiguration

router = APIRouter(prefix="/v1/simulator/faults", tags=["simulator"])


def _faults(services: Services) -> list[SimulatorFaultPublic]:
    configuration = services.cloud.find(SimulatorConfiguration, SIMULATOR_CONFIGURATION_ID)
    faults = configuration.faults.values() if configuration else []
    return [SimulatorFaultPublic(**fault) for fault in faults]


async def _change(services: Services, change: SimulatorFaultChange) -> None:
    verb = "Remove" if change.remove else f"Add ({change.action} {change.operation})"
    attributes = {
        JobAttribute.JOB_TYPE: "ConfigureSimulator",
        JobAttribute.JOB_STATE: "queued",
        JobAttribute.ACCOUNT_ID: str(change.account_id),
        JobAttribute.RESOURCE_TYPE: "SimulatorFault",
        JobAttribute.RESOURCE_ID: str(change.fault_id),
    }
    try:
        await services.temporal.execute_workflow(
            "ConfigureSimulator",
            change,
            id=str(change.job_id),
            task_queue=services.task_queue,
            execution_timeout=timedelta(seconds=60),
            static_summary=f"{verb} simulator fault {change.fault_id}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SearchAttributeKey.for_keyword(a.value), value)
                    for a, value in attributes.items()
                ]
            ),
        )
    except WorkflowFailureError as error:
        raise ApiError(
            500, f"configuring the simulator failed: {error.cause}", code=ErrorCode.INTERNAL_ERROR
        ) from error


@router.get("", response_model=Listing[SimulatorFaultPublic], summary="List simulator faults")
def list_faults(_: AdminCaller, services: Services) -> Listing[SimulatorFaultPublic]:
    faults = _faults(services)
    return Listing[SimulatorFaultPublic](data=faults, count=len(faults))


@router.post(
    "",
    response_model=SimulatorFaultPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Fail or delay a simulator operation",
)
async def add_fault(
    body: SimulatorFaultCreate, caller: AdminCaller, services: Services
) -> SimulatorFaultPublic:
    if (
        body.host_id is not None
        and await run_in_threadpool(services.cloud.find, Host, body.host_id) is None
    ):
        raise ApiError(
            422,
            f"no host with id {body.host_id}",
            code=ErrorCode.PARAM_ERROR,
            loc=("body", "host_id"),
            kind="not_found",
        )
    fault_id = uuid4()
    await _change(
        services,
        SimulatorFaultChange(
            job_id=uuid4(),
            account_id=caller.account_id,
            fault_id=fault_id,
            **body.model_dump(mode="json"),
        ),
    )
    return SimulatorFaultPublic(fault_id=fault_id, **body.model_dump(mode="json"))


@router.delete(
    "/{fault_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a simulator fault"
)
async def remove_fault(fault_id: UUID, caller: AdminCaller, services: Services) -> Response:
    if not any(f.fault_id == fault_id for f in await run_in_threadpool(_faults, services)):
        raise not_found(f"simulator fault {fault_id}", ("path", "fault_id"))
    await _change(
        services,
        SimulatorFaultChange(
            job_id=uuid4(), account_id=caller.account_id, fault_id=fault_id, remove=True
        ),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
