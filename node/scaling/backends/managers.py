"""EC2 manager slots: launching a manager, and relaunching one whose instance is gone.

A deployment's manager `m<i>` is a slot made of three things `provision up` creates and keeps:
a network interface (its private address is the manager's Raft identity), a data volume (its
Raft log, snapshot and store) and a launch template `wq-<cluster>-m<i>` (image, type, role and
the user data that attaches and mounts the volume, then runs the node). Any instance launched
from the template onto the interface is that manager again, with its disk.

`launch_manager` is the one way a manager instance is started, by `provision up` and by the
leader. The leader (`ManagerSlots.step`, with `--ec2-relaunch-managers on`) relaunches a slot
that has no instance left, so a terminated manager comes back without anyone running `up`:
the slot's interface is free once its instance is terminated, and the new instance attaches
the volume at boot. A slot whose instance is still shutting down is tried again at the next
step. It needs a leader, that is a majority; with a majority gone, `provision up` relaunches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from node.scaling.backends.ec2 import CLUSTER_TAG, ROLE_TAG

log = logging.getLogger(__name__)

MANAGER_TAG = "wq-manager"
# How often the leader looks for a slot without its manager.
RELAUNCH_INTERVAL = 30.0
# Instance states in which a slot still has its manager (a stopped one is started by hand,
# not replaced: it keeps the volume attached).
PRESENT = ["pending", "running", "stopping", "stopped", "shutting-down"]


def manager_template(cluster: str, slot: str) -> str:
    return f"wq-{cluster}-{slot}"


def launch_manager(ec2: Any, cluster: str, slot: str, interface_id: str) -> dict[str, Any]:
    """Start the slot's manager from its launch template onto its interface; the instance."""
    reply: dict[str, Any] = ec2.run_instances(
        LaunchTemplate={"LaunchTemplateName": manager_template(cluster, slot)},
        MinCount=1,
        MaxCount=1,
        NetworkInterfaces=[{"DeviceIndex": 0, "NetworkInterfaceId": interface_id}],
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": CLUSTER_TAG, "Value": cluster},
                    {"Key": ROLE_TAG, "Value": "manager"},
                    {"Key": MANAGER_TAG, "Value": slot},
                    {"Key": "Name", "Value": manager_template(cluster, slot)},
                ],
            }
        ],
    )
    instance: dict[str, Any] = reply["Instances"][0]
    return instance


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", resource.get("TagSet", []))}


class ManagerSlots:
    def __init__(self, ec2: Any, cluster: str):
        self._ec2 = ec2
        self._cluster = cluster

    def interfaces(self) -> dict[str, dict[str, Any]]:
        """The slots' network interfaces by slot id."""
        found = self._ec2.describe_network_interfaces(
            Filters=[
                {"Name": f"tag:{CLUSTER_TAG}", "Values": [self._cluster]},
                {"Name": "tag-key", "Values": [MANAGER_TAG]},
            ]
        )["NetworkInterfaces"]
        return {_tags(i)[MANAGER_TAG]: i for i in found}

    def present(self) -> set[str]:
        """Slots that have an instance not yet terminated."""
        slots = set()
        pages = self._ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": f"tag:{CLUSTER_TAG}", "Values": [self._cluster]},
                {"Name": f"tag:{ROLE_TAG}", "Values": ["manager"]},
                {"Name": "instance-state-name", "Values": PRESENT},
            ]
        )
        for page in pages:
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    slots.add(_tags(inst).get(MANAGER_TAG, ""))
        return slots

    def step(self) -> list[str]:
        """Relaunch every slot whose instance is terminated; the instances started."""
        present = self.present()
        started = []
        for slot, iface in sorted(self.interfaces().items()):
            if slot in present:
                continue
            # Its instance is terminated: EC2 releases the interface (the launch fails while
            # it has not yet, and is tried again at the next step).
            try:
                instance = launch_manager(
                    self._ec2, self._cluster, slot, iface["NetworkInterfaceId"]
                )
            except (BotoCoreError, ClientError) as e:
                log.warning("manager %s is gone; relaunching it failed: %s", slot, e)
                continue
            log.warning(
                "manager %s was gone; relaunched it as instance %s at %s",
                slot,
                instance["InstanceId"],
                iface["PrivateIpAddress"],
            )
            started.append(instance["InstanceId"])
        return started

    async def run(self, is_leader: Callable[[], bool], interval: float = RELAUNCH_INTERVAL) -> None:
        """Every `interval` seconds while this node leads, relaunch the slots that lost theirs."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            if not is_leader():
                continue
            try:
                await loop.run_in_executor(None, self.step)
            except Exception:
                log.exception("looking for managers to relaunch failed; retrying")
