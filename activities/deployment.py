"""Deployment activities on the control plane: decisions over the event store, no hypervisor.

Each is a thin call into `domain.deployment`, idempotent by command id, translating the
aggregates into what the workflow and the hypervisor worker need next.
"""

from __future__ import annotations

from temporalio import activity

from activities.deployment_models import (
    DeploymentOutcome,
    Nic,
    Placement,
    PlanInput,
    RegisterDeploymentInput,
    RegisteredDeployment,
    StepInput,
    VmLaunch,
    VolumeCreated,
    VolumeOrder,
    VolumeRemoval,
)
from activities.drivers.hypervisor import (
    TemplateRef,
    VolumeSpec,
)
from activities.errors import reports_cloud_errors
from activities.refs import host_ref, pool_ref
from activities.vm_launch import vm_launch
from domain import deployment
from domain.catalog import Template
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.host import Host
from domain.job_results import DeployedVm
from domain.placement import AvoidSet
from domain.volume import Volume


class DeploymentActivities:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @activity.defn(name="deployment.register")
    @reports_cloud_errors
    def register(self, request: RegisterDeploymentInput) -> RegisteredDeployment:
        validated = deployment.register_deployment(
            self.cloud, request.job_id, request.order, request.submitted_at, request.summary
        )
        return RegisteredDeployment(
            virtual_machine_id=deployment.virtual_machine_id_for(request.job_id),
            root_volume_id=deployment.root_volume_id_for(request.job_id),
            hypervisor=validated.hypervisor,
        )

    @activity.defn(name="deployment.plan")
    @reports_cloud_errors
    def plan(self, request: PlanInput) -> Placement:
        avoid = AvoidSet(
            frozenset(request.avoid_host_ids),
            frozenset(request.avoid_cluster_ids),
            frozenset(request.avoid_pool_ids),
        )
        plan = deployment.plan_deployment(self.cloud, request.job_id, avoid, request.attempt)
        cluster = self.cloud.load(Cluster, plan.cluster_id)
        return Placement(
            host_id=plan.host_id,
            host_name=self.cloud.load(Host, plan.host_id).name,
            cluster_id=plan.cluster_id,
            pod_id=plan.pod_id,
            pool_id=plan.pool_id,
            hypervisor_task_queue=cluster.agent_task_queue,
        )

    @activity.defn(name="deployment.reserve_capacity")
    @reports_cloud_errors
    def reserve_capacity(self, step: StepInput) -> None:
        deployment.reserve_capacity(self.cloud, step.job_id, step.host_id, step.attempt)

    @activity.defn(name="deployment.release_capacity")
    @reports_cloud_errors
    def release_capacity(self, step: StepInput) -> None:
        deployment.release_capacity(self.cloud, step.job_id, step.host_id, step.attempt)

    @activity.defn(name="deployment.begin_root_volume")
    @reports_cloud_errors
    def begin_root_volume(self, step: StepInput) -> VolumeOrder:
        deployment.begin_root_volume(self.cloud, step.job_id, step.pool_id, step.attempt)
        volume = self.cloud.load(Volume, deployment.root_volume_id_for(step.job_id))
        template = self.cloud.load(Template, volume.template_id) if volume.template_id else None
        return VolumeOrder(
            host=host_ref(self.cloud, step.host_id),
            pool=pool_ref(self.cloud, step.pool_id),
            spec=VolumeSpec(
                volume_id=str(volume.id),
                name=volume.name,
                size_bytes=volume.size_bytes,
                template=TemplateRef(
                    template_id=str(template.id),
                    name=template.name,
                    url=template.url,
                    format=template.format,
                    size_bytes=template.size_bytes,
                )
                if template
                else None,
            ),
        )

    @activity.defn(name="deployment.complete_root_volume")
    @reports_cloud_errors
    def complete_root_volume(self, created: VolumeCreated) -> None:
        step = created.step
        deployment.complete_root_volume(
            self.cloud,
            step.job_id,
            step.pool_id,
            created.volume.path,
            created.volume.size_bytes,
            step.attempt,
        )

    @activity.defn(name="deployment.abandon_root_volume")
    @reports_cloud_errors
    def abandon_root_volume(self, step: StepInput) -> None:
        deployment.abandon_root_volume(self.cloud, step.job_id, step.pool_id, step.attempt)

    @activity.defn(name="deployment.expunge_root_volume")
    @reports_cloud_errors
    def expunge_root_volume(self, step: StepInput) -> None:
        deployment.expunge_root_volume(self.cloud, step.job_id, step.pool_id)

    @activity.defn(name="deployment.root_volume_removal")
    @reports_cloud_errors
    def root_volume_removal(self, step: StepInput) -> VolumeRemoval:
        """Where the root disk would be, for the hypervisor worker to delete it."""
        return VolumeRemoval(
            host=host_ref(self.cloud, step.host_id),
            pool=pool_ref(self.cloud, step.pool_id),
            volume_id=str(deployment.root_volume_id_for(step.job_id)),
        )

    @activity.defn(name="deployment.allocate_nic")
    @reports_cloud_errors
    def allocate_nic(self, step: StepInput) -> Nic:
        ip, mac = deployment.allocate_nic(self.cloud, step.job_id)
        return Nic(ip_address=ip, mac_address=mac)

    @activity.defn(name="deployment.release_nic")
    @reports_cloud_errors
    def release_nic(self, step: StepInput) -> None:
        deployment.release_nic(self.cloud, step.job_id)

    @activity.defn(name="deployment.prepare_launch")
    @reports_cloud_errors
    def prepare_launch(self, step: StepInput) -> VmLaunch:
        """Record that the VM is starting on this host, and hand over its full definition."""
        deployment.record_starting_on(self.cloud, step.job_id, step.host_id, step.attempt)
        return vm_launch(self.cloud, deployment.virtual_machine_id_for(step.job_id), step.host_id)

    @activity.defn(name="deployment.complete")
    @reports_cloud_errors
    def complete(self, step: StepInput) -> DeployedVm:
        return deployment.complete_deployment(self.cloud, step.job_id, step.host_id)

    @activity.defn(name="deployment.fail")
    @reports_cloud_errors
    def fail(self, outcome: DeploymentOutcome) -> None:
        deployment.fail_deployment(
            self.cloud,
            outcome.job_id,
            outcome.error_code,
            outcome.error_text,
            order=outcome.order,
            submitted_at=outcome.submitted_at,
            summary=outcome.summary,
            cancelled=outcome.cancelled,
        )
