"""The EC2 backend through real boto3 calls against a moto server started here."""

import base64
import logging
import os
import time

import boto3
import pytest

from node.scaling.backends.ec2 import CLUSTER_TAG, WORKER_TAG, EC2Backend
from node.scaling.loop import Scaler
from node.scaling.policy import Limits
from node.scheduling.roster import Roster
from tests.integration.moto import apply_env, clients, moto_server

PACKAGE = "s3://wq-bucket/packages/0123/replicated_work_queue-0.1.0.tar.gz"
MANAGERS = ["http://10.0.0.1:8001", "http://10.0.0.2:8001"]


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture(scope="module")
def image(moto_url):
    """An AMI of the moto server, looked up once: listing its images takes it a second or two."""
    return clients(moto_url, "ec2")["ec2"].describe_images()["Images"][0]["ImageId"]


@pytest.fixture
def ec2(moto_url, image, monkeypatch, request):
    apply_env(monkeypatch, moto_url)
    client = boto3.client("ec2", region_name="us-east-1")
    client.cluster = request.node.name[:40].replace("[", "-").replace("]", "")
    client.image = image
    return client


def backend(client, cluster=None, **kwargs) -> EC2Backend:
    cluster = cluster or client.cluster
    iam = boto3.client("iam", region_name="us-east-1")
    try:
        iam.create_instance_profile(InstanceProfileName="wq-worker")
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    return EC2Backend(
        client,
        boto3.client("s3", region_name="us-east-1"),
        cluster=cluster,
        manager_urls=MANAGERS,
        package=PACKAGE,
        secret_parameter="/wq/t/secret",
        ami=client.image,
        instance_type="t3.small",
        instance_profile="wq-worker",
        idle_timeout=90,
        start_cost=45,
        **kwargs,
    )


def alive(client, cluster=None):
    cluster = cluster or client.cluster
    out = client.describe_instances(
        Filters=[
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    return [i for r in out["Reservations"] for i in r["Instances"]]


def test_a_launch_carries_user_data_tags_and_terminate_on_shutdown(ec2):
    b = backend(ec2)
    (worker_id,) = b.launch(1)
    (inst,) = alive(ec2)
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags[CLUSTER_TAG] == ec2.cluster and tags[WORKER_TAG] == worker_id
    assert tags["wq-role"] == "worker"
    attr = ec2.describe_instance_attribute(
        InstanceId=inst["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
    )
    assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    data = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="userData")
    script = base64.b64decode(data["UserData"]["Value"]).decode()
    # The package comes through a presigned URL, the secret from SSM with the instance role:
    # the user data holds neither the secret nor any AWS key.
    assert "wq-bucket/packages/0123/replicated_work_queue-0.1.0.tar.gz?" in script
    assert "X-Amz-Signature" in script or "Signature=" in script
    assert "-m provision.parameter --region us-east-1 /wq/t/secret" in script
    assert "WQ_SECRET=" not in script and os.environ["AWS_SECRET_ACCESS_KEY"] not in script
    assert f"--managers {','.join(MANAGERS)}" in script
    assert f"--id {worker_id}" in script
    assert "shutdown -h now" in script
    options = ec2.describe_instances(InstanceIds=[inst["InstanceId"]])
    assert options["Reservations"][0]["Instances"][0]["MetadataOptions"]["HttpTokens"] == "required"
    assert inst["IamInstanceProfile"]["Arn"].endswith("/wq-worker")


def test_running_finds_this_clusters_workers_by_tag_only(ec2):
    mine, other = backend(ec2), backend(ec2, cluster="someone-else")
    launched = mine.launch(2)
    other.launch(1)
    # A fresh backend object (a new leader) sees the same workers.
    assert sorted(backend(ec2).running()) == sorted(launched)


def test_workers_that_never_register_are_terminated_after_the_boot_timeout(ec2):
    b = backend(ec2)
    scaler = Scaler(
        b, Roster(ttl=20), Limits(max_workers=3, start_cost=45, default_speed=1e6), boot_timeout=60
    )
    scaler.step(time.time(), queued=2, backlog_iterations=10**9, oldest_queued_at=None, busy=set())
    assert len(alive(ec2)) == 2
    scaler.step(
        time.time() + 61, queued=2, backlog_iterations=10**9, oldest_queued_at=None, busy=set()
    )
    mine = ec2.describe_instances(Filters=[{"Name": f"tag:{CLUSTER_TAG}", "Values": [ec2.cluster]}])
    states = {i["State"]["Name"] for r in mine["Reservations"] for i in r["Instances"]}
    assert "shutting-down" in states or "terminated" in states
    assert len([i for i in alive(ec2) if i["LaunchTime"].timestamp() < time.time() - 30]) == 0


def test_the_max_holds_across_a_leader_change(ec2):
    limits = Limits(max_workers=4, start_cost=45, default_speed=1e6, max_launches_per_minute=100)
    first = Scaler(backend(ec2), Roster(ttl=20), limits, boot_timeout=300)
    first.step(
        time.time(), queued=3, backlog_iterations=3 * 10**9, oldest_queued_at=None, busy=set()
    )
    assert len(alive(ec2)) == 3
    # The leader dies; a new one starts from scratch and finds the booting instances by tag.
    second = Scaler(backend(ec2), Roster(ttl=20), limits, boot_timeout=300)
    for _ in range(3):
        second.step(
            time.time(), queued=50, backlog_iterations=50 * 10**9, oldest_queued_at=None, busy=set()
        )
    assert len(alive(ec2)) == 4


def test_a_worker_that_never_registers_has_its_console_logged_and_launches_back_off(ec2, caplog):
    scaler = Scaler(
        backend(ec2),
        Roster(ttl=20),
        Limits(max_workers=1, start_cost=45, default_speed=1e6),
        boot_timeout=60,
    )
    now = time.time()

    def step(at: float):
        return scaler.step(
            at, queued=1, backlog_iterations=10**9, oldest_queued_at=None, busy=set()
        )

    step(now)
    assert len(alive(ec2)) == 1
    with caplog.at_level(logging.WARNING, logger="node.scaling.loop"):
        decision = step(now + 61)
    # The instance's console output (moto's sample boot log) is in the node's log.
    assert "never registered; the last lines its machine printed" in caplog.text
    assert "Kernel command line" in caplog.text
    assert alive(ec2) == []
    assert decision.start == 0
    assert decision.reason == "1 worker never registered; next try in 60 s"
    assert step(now + 120).start == 0 and alive(ec2) == []
    assert step(now + 122).start == 1 and len(alive(ec2)) == 1
