"""Build the scaling backend and the policy limits from the node's configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.config import NodeConfig
from node.scaling.backends.base import Backend
from node.scaling.policy import DEFAULT_TARGET, Limits

if TYPE_CHECKING:
    from node.scaling.backends.managers import ManagerSlots


def make_backend(cfg: NodeConfig, manager_urls: list[str]) -> Backend:
    if cfg.backend == "ec2":
        import boto3

        from node.scaling.backends.ec2 import EC2Backend

        region = cfg.ec2_region or None
        return EC2Backend(
            boto3.client("ec2", region_name=region),
            boto3.client("s3", region_name=region),
            cluster=cfg.cluster_name,
            manager_urls=manager_urls,
            package=cfg.ec2_package,
            secret_parameter=cfg.ec2_secret_parameter,
            ami=cfg.ec2_ami,
            instance_type=cfg.ec2_instance_type,
            instance_profile=cfg.ec2_instance_profile,
            subnet=cfg.ec2_subnet,
            security_groups=tuple(
                g.strip() for g in cfg.ec2_security_groups.split(",") if g.strip()
            ),
            idle_timeout=cfg.worker_idle_timeout,
            start_cost=cfg.ec2_start_cost,
        )
    from node.scaling.backends.local import LocalBackend

    return LocalBackend(manager_urls, cfg.secret, cfg.node_id, cfg.worker_idle_timeout)


def make_manager_slots(cfg: NodeConfig) -> ManagerSlots | None:
    """The cluster's EC2 manager slots, when this node is to relaunch missing managers."""
    if cfg.ec2_relaunch_managers != "on":
        return None
    import boto3

    from node.scaling.backends.managers import ManagerSlots

    return ManagerSlots(boto3.client("ec2", region_name=cfg.ec2_region or None), cfg.cluster_name)


def scaling_limits(cfg: NodeConfig, backend: Backend) -> Limits:
    """The policy's limits: the configured ones, and the backend's start cost."""
    target = cfg.scale_target_seconds or DEFAULT_TARGET[cfg.backend]
    return Limits(
        min_workers=cfg.min_workers,
        max_workers=cfg.max_workers,
        target_drain_seconds=target,
        start_cost=backend.start_cost,
        max_launches_per_minute=cfg.max_launches_per_minute,
    )
