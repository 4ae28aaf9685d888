"""The EC2 user data, run on this machine. The worker's, as the EC2 backend hands it to
run_instances (read back from a moto server), installs the source archive packed from this
checkout from a presigned S3 URL, reads the cluster secret from SSM, and starts a worker that
completes a job on a local cluster; then it powers off. The manager's installs the archive,
attaches its data volume (on the moto server) and starts the node. Only the OS-level steps
(installing Python, the AWS CLI, the instance's id, mounting, systemd, powering off) and the
install directory are replaced, through WQ_BOOT_OVERRIDES."""

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cluster import SECRET, expected_digest, wait_until
from node.scaling.backends.ec2 import EC2Backend
from provision.package import build_sdist
from tests.integration.moto import aws_env, moto_server
from tests.integration.moto import clients as moto_clients

PARAMETER = "/wq/boot/secret"
API_KEY_PARAMETER = "/wq/boot/api-key"
API_KEY = "k" * 43
TLS_PARAMETERS = ("/wq/boot/m0/tls-cert", "/wq/boot/m0/tls-key")
# The worker's idle timeout. An idle worker checks it each time a lease poll comes back empty,
# every 4 s here (0.8 of the cluster's 5 s request timeout): it exits on the second empty poll,
# after 8 s, which leaves the test ample time to enqueue once the worker has registered.
IDLE = 8


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    """A moto server holding the package (bucket) and the cluster secret (SSM), like `up` leaves
    them."""
    tmp = tmp_path_factory.mktemp("boot-aws")
    with moto_server(tmp) as url:
        env = aws_env(url)
        clients = moto_clients(url, "ec2", "s3", "ssm")
        package = build_sdist(tmp)
        clients["s3"].create_bucket(Bucket="wq-boot")
        clients["s3"].upload_file(str(package.path), "wq-boot", package.key)
        clients["ssm"].put_parameter(Name=PARAMETER, Type="SecureString", Value=SECRET)
        clients["ssm"].put_parameter(Name=API_KEY_PARAMETER, Type="SecureString", Value=API_KEY)
        clients["ssm"].put_parameter(Name=TLS_PARAMETERS[0], Type="String", Value="CERT")
        clients["ssm"].put_parameter(Name=TLS_PARAMETERS[1], Type="SecureString", Value="KEY")
        # Listing moto's images takes it a second or two: once.
        image = clients["ec2"].describe_images()["Images"][0]["ImageId"]
        yield {**clients, "env": env, "package": f"s3://wq-boot/{package.key}", "image": image}


def user_data(aws, managers: list[str], package: str) -> tuple[str, str]:
    """Launch one worker through the EC2 backend; return its id and the user data EC2 holds."""
    ec2 = aws["ec2"]
    backend = EC2Backend(
        ec2,
        aws["s3"],
        cluster="boot",
        manager_urls=managers,
        package=package,
        secret_parameter=PARAMETER,
        ami=aws["image"],
        instance_type="t3.small",
        idle_timeout=IDLE,
        start_cost=45,
    )
    (worker_id,) = backend.launch(1)
    (reservation,) = ec2.describe_instances(
        Filters=[{"Name": "tag:wq-worker-id", "Values": [worker_id]}]
    )["Reservations"]
    data = ec2.describe_instance_attribute(
        InstanceId=reservation["Instances"][0]["InstanceId"], Attribute="userData"
    )
    return worker_id, base64.b64decode(data["UserData"]["Value"]).decode()


# The steps both scripts write to the console first, in order.
FIRST_STEPS = [
    "wq-bootstrap: bootstrap started",
    "wq-bootstrap: installing Python",
    "wq-bootstrap: downloading the package",
    "wq-bootstrap: installing the package",
    "wq-bootstrap: reading the cluster secret",
]


def console_steps(tmp: Path) -> list[str]:
    """The console's lines, without the times some of them end with."""
    return [line.split(" 20")[0] for line in (tmp / "console").read_text().splitlines()]


def run_boot(script: str, tmp: Path, aws, overrides: str = "") -> tuple[subprocess.Popen, Path]:
    """Start the script as cloud-init would (as a file run by bash), OS steps replaced."""
    (tmp / "user-data").write_text(script)
    marker = tmp / "powered-off"
    (tmp / "overrides.sh").write_text(f"""
WQ_ROOT={tmp}/root
WQ_LOG={tmp}/bootstrap.log
WQ_CONSOLE={tmp}/console
install_python() {{ echo {sys.base_prefix}/bin/python3; }}
power_off() {{ echo "exit status $?" > {marker}; }}
{overrides}
""")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WQ_"))},
        "WQ_BOOT_OVERRIDES": str(tmp / "overrides.sh"),
        **aws["env"],
    }
    proc = subprocess.Popen(["bash", str(tmp / "user-data")], env=env, start_new_session=True)
    return proc, marker


def test_the_worker_bootstrap_installs_the_package_and_completes_a_job(make_cluster, aws, tmp_path):
    cluster = make_cluster(worker_idle_timeout=IDLE)
    worker_id, script = user_data(aws, cluster.urls, aws["package"])
    assert SECRET not in script
    proc, marker = run_boot(script, tmp_path, aws)
    try:
        # Installing the package and its dependencies into a fresh environment takes a while;
        # then the worker registers under the id the EC2 backend gave it. The cluster starts
        # no worker of its own, so the job below can only be computed by this one.
        leader = cluster.wait_leader()
        wait_until(
            lambda: worker_id in json.dumps(cluster.status(leader)["workers"]),
            240,
            "the bootstrapped worker to register",
            interval=0.3,
        )
        payload = os.urandom(2048)
        r = cluster.enqueue(0, payload, 1000)
        assert r.status_code == 200, r.text
        cluster.wait_completed(1, {r.json()["id"]: expected_digest(payload, 1000)}, timeout=60)
        # Idle past its timeout, the worker exits and the script powers the instance off.
        wait_until(lambda: marker.exists(), IDLE + 60, "the script to power off")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    secret_file = tmp_path / "root" / "secret"
    assert secret_file.read_text() == SECRET
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    log = (tmp_path / "bootstrap.log").read_text()
    assert "worker exited" in log and SECRET not in log
    assert console_steps(tmp_path) == [
        *FIRST_STEPS,
        "wq-bootstrap: starting the worker",
        "wq-bootstrap: worker exited",
    ]
    if shutil.which("cc") or shutil.which("gcc"):
        assert "SHA-512 kernel: c" in log  # compiled on the "instance" itself


def test_a_failed_step_still_powers_the_instance_off(aws, tmp_path):
    missing = aws["package"].replace("/packages/", "/missing/")
    _, script = user_data(aws, ["http://127.0.0.1:9"], missing)
    proc, marker = run_boot(script, tmp_path, aws)
    started = time.monotonic()
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert marker.read_text().strip() not in ("", "exit status 0")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "root" / "secret").exists()
    # The console says which step failed, and ends with the log's last lines: curl's error.
    console = (tmp_path / "console").read_text()
    assert "wq-bootstrap: downloading the package\n" in console
    assert "installing the package" not in console
    assert console.rstrip().splitlines()[-1].startswith("wq-bootstrap: curl: (22)"), console


def test_the_manager_bootstrap_reads_the_package_attaches_its_volume_and_starts_the_node(
    aws, tmp_path
):
    """The manager's user data as `provision up` renders it: the package read from S3 with the
    instance role (here boto3 stands in for the AWS CLI), the secret and API key from SSM, the
    slot's volume attached by `provision.volume` to this instance (on the moto server), then
    mounted and the node started (those two only recorded)."""
    from node.scaling.backends.userdata import manager_script

    ec2 = aws["ec2"]
    zone = ec2.describe_subnets()["Subnets"][0]["AvailabilityZone"]
    volume = ec2.create_volume(AvailabilityZone=zone, Size=1, VolumeType="gp3")["VolumeId"]
    (instance,) = ec2.run_instances(ImageId=aws["image"], MinCount=1, MaxCount=1)["Instances"]
    script = manager_script(
        package=aws["package"],
        region="us-east-1",
        secret_parameter=PARAMETER,
        api_key_parameter=API_KEY_PARAMETER,
        tls_parameters=TLS_PARAMETERS,
        tls_fingerprint="sha256:" + "0" * 64,
        volume=volume,
        node_env={"WQ_NODE_ID": "m0", "WQ_DATA_DIR": "$WQ_ROOT/data"},
    )
    done = tmp_path / "done"
    fetch = (
        "import boto3, sys; b, _, k = sys.argv[1][5:].partition('/'); "
        "boto3.client('s3').download_file(b, k, sys.argv[2])"
    )
    proc, _ = run_boot(
        script,
        tmp_path,
        aws,
        f"""
fetch_package() {{ {sys.executable} -c "{fetch}" "$1" "$2"; }}
instance_id() {{ echo {instance["InstanceId"]}; }}
mount_data() {{ mkdir -p "$2"; echo "mount $1 $2" >> {done}; }}
start_node() {{ echo "start $(grep WQ_NODE_ID "$WQ_ROOT/node.env")" >> {done}; }}
""",
    )
    try:
        assert proc.wait(timeout=240) == 0, (tmp_path / "bootstrap.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    (attached,) = ec2.describe_volumes(VolumeIds=[volume])["Volumes"][0]["Attachments"]
    assert attached["InstanceId"] == instance["InstanceId"] and attached["Device"] == "/dev/sdf"
    root = tmp_path / "root"
    assert done.read_text().splitlines() == [
        f"mount {volume} {root}/data",
        "start WQ_NODE_ID=m0",
    ]
    assert (root / "api-key").read_text() == API_KEY and (root / "secret").read_text() == SECRET
    assert (root / "tls.pem").read_text() == "CERT" and (root / "tls.key").read_text() == "KEY"
    assert stat.S_IMODE((root / "tls.key").stat().st_mode) == 0o600
    # The node's data directory is where the volume is mounted.
    assert (root / "node.env").read_text() == f"WQ_NODE_ID=m0\nWQ_DATA_DIR={root}/data\n"
    assert console_steps(tmp_path) == [
        *FIRST_STEPS,
        "wq-bootstrap: reading the TLS certificate",
        f"wq-bootstrap: attaching the data volume {volume}",
        "wq-bootstrap: node started",
    ]
