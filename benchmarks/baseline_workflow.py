"""The benchmark baseline: a bare workflow of N no-op activities (own module, so the workflow
sandbox can re-import it without the benchmark's side effects)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="noop")
def noop(step: int) -> int:
    return step


@workflow.defn(name="BareActivities")
class BareActivities:
    @workflow.run
    async def run(self, activities: int) -> int:
        for step in range(activities):
            await workflow.execute_activity(
                noop, step, start_to_close_timeout=timedelta(seconds=60)
            )
        return activities
