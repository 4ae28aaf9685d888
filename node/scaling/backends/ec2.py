"""EC2 backend: each worker is an instance started with boto3.

An instance carries the tags `wq-cluster=<cluster name>`, `wq-role=worker` and
`wq-worker-id=<worker id>`; its user data (`userdata.worker_script`) installs the package
from a presigned S3 URL, reads the cluster secret from SSM with the worker's instance role,
runs `python -m worker` with the managers' addresses, then powers the instance off when the
worker exits (idle), and `InstanceInitiatedShutdownBehavior=terminate` turns that
into a termination: nothing is left billing. Any leader finds the cluster's workers by tag, so
a new leader counts the instances an earlier one started. The boto3 clients are injected, so
tests pass ones pointed at moto.
"""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from node.scaling.backends.userdata import PACKAGE_URL_SECONDS, worker_script

log = logging.getLogger(__name__)

# Tag keys; `provision` tags the deployment's other resources with the same ones.
CLUSTER_TAG = "wq-cluster"
ROLE_TAG = "wq-role"
WORKER_TAG = "wq-worker-id"
ALIVE_STATES = ["pending", "running"]
# Lines of a worker's console output logged when it never registered.
BOOT_LOG_LINES = 20


class EC2Backend:
    name = "ec2"

    def __init__(
        self,
        client: Any,
        s3: Any,
        *,
        cluster: str,
        manager_urls: list[str],
        package: str,
        secret_parameter: str,
        ami: str,
        instance_type: str,
        instance_profile: str = "",
        subnet: str = "",
        security_groups: tuple[str, ...] = (),
        idle_timeout: float,
        start_cost: float,
    ):
        self._ec2 = client
        self._s3 = s3
        self._cluster = cluster
        self._urls = manager_urls
        self._bucket, _, self._key = package.removeprefix("s3://").partition("/")
        self._secret_parameter = secret_parameter
        self._ami = ami
        self._type = instance_type
        self._profile = instance_profile
        self._subnet = subnet
        self._groups = list(security_groups)
        self._idle = idle_timeout
        self.start_cost = start_cost
        self._instances: dict[str, str] = {}  # worker id -> instance id

    def user_data(self, worker_id: str) -> str:
        url = self._s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._key},
            ExpiresIn=PACKAGE_URL_SECONDS,
        )
        return worker_script(
            package_url=url,
            package=self._key.rsplit("/", 1)[-1],
            region=self._ec2.meta.region_name,
            secret_parameter=self._secret_parameter,
            manager_urls=self._urls,
            worker_id=worker_id,
            idle_timeout=self._idle,
        )

    def launch(self, count: int) -> list[str]:
        started = []
        for _ in range(count):
            worker_id = f"{self._cluster}-ec2-{uuid.uuid4().hex[:10]}"
            params: dict[str, Any] = {
                "ImageId": self._ami,
                "InstanceType": self._type,
                "MinCount": 1,
                "MaxCount": 1,
                "UserData": self.user_data(worker_id),
                "MetadataOptions": {"HttpTokens": "required"},
                "InstanceInitiatedShutdownBehavior": "terminate",
                "TagSpecifications": [
                    {
                        "ResourceType": "instance",
                        "Tags": [
                            {"Key": CLUSTER_TAG, "Value": self._cluster},
                            {"Key": ROLE_TAG, "Value": "worker"},
                            {"Key": WORKER_TAG, "Value": worker_id},
                            {"Key": "Name", "Value": worker_id},
                        ],
                    }
                ],
            }
            if self._profile:
                params["IamInstanceProfile"] = {"Name": self._profile}
            if self._subnet:
                params["SubnetId"] = self._subnet
            if self._groups:
                params["SecurityGroupIds"] = self._groups
            reply = self._ec2.run_instances(**params)
            instance_id = reply["Instances"][0]["InstanceId"]
            self._instances[worker_id] = instance_id
            log.info("worker %s launched as instance %s", worker_id, instance_id)
            started.append(worker_id)
        return started

    def running(self) -> dict[str, float]:
        found: dict[str, float] = {}
        instances: dict[str, str] = {}
        pages = self._ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": f"tag:{CLUSTER_TAG}", "Values": [self._cluster]},
                {"Name": f"tag:{ROLE_TAG}", "Values": ["worker"]},
                {"Name": "instance-state-name", "Values": ALIVE_STATES},
            ]
        )
        for page in pages:
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                    worker_id = tags.get(WORKER_TAG, inst["InstanceId"])
                    found[worker_id] = inst["LaunchTime"].timestamp()
                    instances[worker_id] = inst["InstanceId"]
        self._instances = instances
        return found

    def terminate(self, worker_ids: list[str]) -> None:
        ids = [self._instances[w] for w in worker_ids if w in self._instances]
        if ids:
            self._ec2.terminate_instances(InstanceIds=ids)
            log.warning("terminated instances %s", ", ".join(ids))

    def boot_log(self, worker_id: str) -> str | None:
        """The instance's console output (the bootstrap script writes its progress there),
        its last BOOT_LOG_LINES lines."""
        instance = self._instances.get(worker_id)
        if instance is None:
            return None
        try:
            output = self._ec2.get_console_output(InstanceId=instance).get("Output")
        except (BotoCoreError, ClientError) as e:
            log.info("no console output of instance %s: %s", instance, e)
            return None
        if not output:
            return None
        try:
            text = base64.b64decode(output).decode(errors="replace")
        except ValueError:
            text = output
        return "\n".join(text.splitlines()[-BOOT_LOG_LINES:])

    def stop_all(self) -> None:
        """Instances outlive a manager: the next leader adopts them by tag."""
