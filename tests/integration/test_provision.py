"""`python -m provision` as a real process against a real moto server: up, status, up again,
repair after a manager is terminated, down, down again."""

import base64
import json
import os
import shutil
import subprocess
import sys

import pytest

from bench.cluster import wait_until
from node.scaling.backends.managers import ManagerSlots
from provision import aws as aws_finders
from provision.aws import Clients
from provision.deployment import Deployment
from provision.down import down
from provision.package import ROOT, SOURCES
from provision.up import up
from provision.upgrade import EC2Fleet, upgrade
from provision.volume import attach
from tests.integration.moto import apply_env, aws_env, clients, moto_server
from tests.unit.test_deployment import assert_least_privilege

NAME = "ptest"
CIDR = "203.0.113.7/32"
NEW_CIDR = "198.51.100.0/24"


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture(scope="module")
def env(moto_url):
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**base, **aws_env(moto_url)}


@pytest.fixture(scope="module")
def aws(env):
    return clients(env["AWS_ENDPOINT_URL"], "ec2", "iam", "s3", "ssm", "cloudwatch")


def provision(env, *args, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "provision", *args, "--name", NAME],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def tags(resource) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", resource.get("TagSet", []))}


def ours(aws):
    """Everything tagged as this deployment's, by kind (terminated instances are gone)."""
    ec2, f = aws["ec2"], [{"Name": "tag:wq-cluster", "Values": [NAME]}]
    instances = [
        i
        for r in ec2.describe_instances(
            Filters=f
            + [
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                }
            ]
        )["Reservations"]
        for i in r["Instances"]
    ]
    return {
        "groups": ec2.describe_security_groups(Filters=f)["SecurityGroups"],
        "interfaces": ec2.describe_network_interfaces(Filters=f)["NetworkInterfaces"],
        "addresses": ec2.describe_addresses(Filters=f)["Addresses"],
        "volumes": ec2.describe_volumes(Filters=f)["Volumes"],
        "templates": ec2.describe_launch_templates(Filters=f)["LaunchTemplates"],
        "instances": instances,
        "parameters": [
            p
            for page in aws["ssm"]
            .get_paginator("describe_parameters")
            .paginate(
                ParameterFilters=[
                    {"Key": "Name", "Option": "BeginsWith", "Values": [f"/wq/{NAME}/"]}
                ]
            )
            for p in page["Parameters"]
        ],
        "alarms": aws["cloudwatch"].describe_alarms(AlarmNamePrefix=f"wq.{NAME}.")["MetricAlarms"],
        "roles": [
            r for r in aws["iam"].list_roles()["Roles"] if r["RoleName"].startswith(f"wq-{NAME}-")
        ],
        "profiles": [
            p
            for p in aws["iam"].list_instance_profiles()["InstanceProfiles"]
            if p["InstanceProfileName"].startswith(f"wq-{NAME}-")
        ],
        "buckets": [
            b for b in aws["s3"].list_buckets()["Buckets"] if b["Name"].startswith(f"wq-{NAME}-")
        ],
    }


def ids(found) -> dict:
    key = {
        "groups": "GroupId",
        "interfaces": "NetworkInterfaceId",
        "addresses": "AllocationId",
        "volumes": "VolumeId",
        "templates": "LaunchTemplateName",
        "instances": "InstanceId",
        "parameters": "Name",
        "alarms": "AlarmName",
        "roles": "RoleName",
        "profiles": "InstanceProfileName",
        "buckets": "Name",
    }
    return {kind: sorted(r[key[kind]] for r in rows) for kind, rows in found.items()}


def test_up_status_up_repair_down(env, aws):
    first = provision(env, "up", "--client-cidr", CIDR, "--wait", "0", "--max-workers", "6")
    found = ours(aws)
    counts = {kind: len(rows) for kind, rows in found.items()}
    assert counts == {
        "groups": 1,
        "interfaces": 3,
        "addresses": 3,
        "volumes": 3,
        "templates": 3,
        "instances": 3,
        "parameters": 11,  # secret, API key, settings, CA key and certificate, 3 x (key, cert)
        "alarms": 6,
        "roles": 2,
        "profiles": 2,
        "buckets": 1,
    }
    for kind in ("groups", "interfaces", "addresses", "volumes", "templates", "instances"):
        assert all(tags(r)["wq-cluster"] == NAME for r in found[kind]), kind
    (group,) = found["groups"]
    check_rules(group, CIDR)
    check_volumes(found, found["interfaces"][0]["AvailabilityZone"])
    check_managers(aws, found)
    check_roles(aws)
    check_secrets_stay_secret(env, aws, first)
    settings = aws["ssm"].get_parameter(Name=f"/wq/{NAME}/settings")["Parameter"]
    assert settings["Type"] == "String"  # no secret in it: what `upgrade` applies again
    assert json.loads(settings["Value"])["max_workers"] == 6
    bucket = found["buckets"][0]["Name"]
    assert tags(aws["s3"].get_bucket_tagging(Bucket=bucket))["wq-cluster"] == NAME
    block = aws["s3"].get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    (package,) = aws["s3"].list_objects_v2(Bucket=bucket)["Contents"]
    assert package["Key"].endswith("/replicated_work_queue-0.1.0.tar.gz")
    urls = [line.split()[0] for line in first.stdout.splitlines() if line.startswith("  https://")]
    assert len(urls) == 3 and all(u.endswith(":8000") for u in urls)
    assert "curl --cacert wq-ca.pem" in first.stdout
    check_certificates(env, aws, found)

    status = provision(env, "status").stdout
    for kind_ids in ids(found).values():
        for resource_id in kind_ids:
            assert resource_id in status
    assert status.count("unreachable") == 3  # moto's addresses answer nothing

    # A second `up` finds everything and creates nothing.
    again = provision(env, "up", "--client-cidr", CIDR, "--wait", "0", "--max-workers", "6")
    assert ids(ours(aws)) == ids(found)
    assert "created" not in again.stderr and "launched" not in again.stderr

    # A terminated manager comes back on its own network interface: same address, same identity.
    m1 = next(i for i in found["instances"] if tags(i)["wq-manager"] == "m1")
    aws["ec2"].terminate_instances(InstanceIds=[m1["InstanceId"]])
    aws["ec2"].get_waiter("instance_terminated").wait(InstanceIds=[m1["InstanceId"]])
    # Also a changed client CIDR: the old rule goes, the new one comes.
    repaired = provision(env, "up", "--client-cidr", NEW_CIDR, "--wait", "0", "--max-workers", "6")
    assert "launched   manager m1" in repaired.stderr
    check_rules(
        aws["ec2"].describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"][0],
        NEW_CIDR,
    )
    after = ours(aws)
    new_m1 = next(i for i in after["instances"] if tags(i)["wq-manager"] == "m1")
    assert new_m1["InstanceId"] != m1["InstanceId"]
    assert new_m1["PrivateIpAddress"] == m1["PrivateIpAddress"]
    assert {k: v for k, v in ids(after).items() if k != "instances"} == {
        k: v for k, v in ids(found).items() if k != "instances"
    }
    alarm = aws["cloudwatch"].describe_alarms(AlarmNames=[f"wq.{NAME}.m1.recover"])["MetricAlarms"][
        0
    ]
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": new_m1["InstanceId"]}]
    check_relaunches_keep_the_volumes(aws, found, after)

    # A worker the leader launched (tagged by the node's EC2 backend) goes down with the rest.
    aws["ec2"].run_instances(
        ImageId=new_m1["ImageId"],
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "wq-cluster", "Value": NAME},
                    {"Key": "wq-role", "Value": "worker"},
                ],
            }
        ],
    )
    assert len(ours(aws)["instances"]) == 4

    refused = provision(env, "down", check=False)  # no terminal, no --yes: refuses
    assert refused.returncode == 2 and "--yes" in refused.stderr
    provision(env, "down", "--yes")
    assert all(not rows for rows in ours(aws).values()), ours(aws)
    assert "nothing exists" in provision(env, "status").stdout
    second = provision(env, "down", "--yes")
    assert second.stderr.strip() == ""


def check_relaunches_keep_the_volumes(aws, found, after):
    """A relaunched manager gets its slot's volume back, whether `up` relaunched it or, with
    nobody running `up`, the leader did (`ManagerSlots`, as the node runs it)."""
    ec2 = aws["ec2"]
    volume = {tags(v)["wq-manager"]: v["VolumeId"] for v in found["volumes"]}
    manager = {tags(i)["wq-manager"]: i for i in after["instances"]}

    def attached_to(slot):
        (v,) = ec2.describe_volumes(VolumeIds=[volume[slot]])["Volumes"]
        return [a["InstanceId"] for a in v["Attachments"]]

    # Each manager's boot attaches its slot's volume; m1 is the one `up` relaunched above.
    for slot in ("m0", "m1", "m2"):
        assert volume[slot] in user_data(aws, manager[slot])
        attach(ec2, volume[slot], manager[slot]["InstanceId"], timeout=30, interval=0.2)
        assert attached_to(slot) == [manager[slot]["InstanceId"]]
    # A volume still held by a live manager is never taken: the boot gives up, saying so.
    with pytest.raises(SystemExit, match=manager["m0"]["InstanceId"]):
        attach(ec2, volume["m0"], manager["m2"]["InstanceId"], timeout=0.5, interval=0.2)

    slots = ManagerSlots(ec2, NAME)
    assert slots.step() == []  # every slot has its manager
    old = manager["m2"]
    ec2.terminate_instances(InstanceIds=[old["InstanceId"]])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[old["InstanceId"]])
    assert attached_to("m2") == []
    (started,) = slots.step()
    (reservation,) = ec2.describe_instances(InstanceIds=[started])["Reservations"]
    (new,) = reservation["Instances"]
    assert {k: v for k, v in tags(new).items() if k.startswith("wq-")} == {
        "wq-cluster": NAME,
        "wq-role": "manager",
        "wq-manager": "m2",
    }
    assert [n["NetworkInterfaceId"] for n in new["NetworkInterfaces"]] == [
        n["NetworkInterfaceId"] for n in old["NetworkInterfaces"]
    ]
    assert new["PrivateIpAddress"] == old["PrivateIpAddress"]
    assert launched_from(aws, new) == launched_from(aws, old)
    attach(ec2, volume["m2"], started, timeout=30, interval=0.2)
    assert attached_to("m2") == [started]
    assert slots.step() == []


def check_certificates(env, aws, found):
    """`provision ca` prints the CA; each manager's certificate, signed by it, names its
    public and private addresses; the CA's and the managers' keys are SecureStrings."""
    from cryptography import x509

    ca_pem = provision(env, "ca").stdout
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    public = {a["NetworkInterfaceId"]: a["PublicIp"] for a in found["addresses"]}
    ssm = aws["ssm"]
    for iface in found["interfaces"]:
        m = tags(iface)["wq-manager"]
        cert_pem = ssm.get_parameter(Name=f"/wq/{NAME}/{m}/tls-cert")["Parameter"]["Value"]
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(str(ip) for ip in names.get_values_for_type(x509.IPAddress)) == sorted(
            [public[iface["NetworkInterfaceId"]], iface["PrivateIpAddress"]]
        )
    for name in ("ca-key", "m0/tls-key", "m1/tls-key", "m2/tls-key"):
        assert ssm.get_parameter(Name=f"/wq/{NAME}/{name}")["Parameter"]["Type"] == "SecureString"


def check_rules(group, cidr=CIDR):
    rules = {
        (p["FromPort"], src): p
        for p in group["IpPermissions"]
        for src in [r["CidrIp"] for r in p.get("IpRanges", [])]
        + [g["GroupId"] for g in p.get("UserIdGroupPairs", [])]
    }
    me = group["GroupId"]
    # Public API port from the client CIDR; internal routes and Raft only from members.
    assert set(rules) == {(8000, cidr), (8100, me), (7000, me)}
    assert all(
        p["IpProtocol"] == "tcp" and p["FromPort"] == p["ToPort"] for p in group["IpPermissions"]
    )


def user_data(aws, inst) -> str:
    return user_data_of(aws["ec2"], inst)


def launched_from(aws, inst) -> dict:
    """The launch template version the instance was launched from (EC2 tags it so)."""
    t = tags(inst)
    (version,) = aws["ec2"].describe_launch_template_versions(
        LaunchTemplateId=t["aws:ec2launchtemplate:id"],
        Versions=[t["aws:ec2launchtemplate:version"]],
    )["LaunchTemplateVersions"]
    assert version["LaunchTemplateName"] == f"wq-{NAME}-{t['wq-manager']}"
    return version["LaunchTemplateData"]


def check_volumes(found, zone):
    for v in found["volumes"]:
        assert v["Encrypted"] and v["VolumeType"] == "gp3" and v["Size"] == 20, v
        assert v["AvailabilityZone"] == zone
    assert sorted(tags(v)["wq-manager"] for v in found["volumes"]) == ["m0", "m1", "m2"]


def check_managers(aws, found):
    volumes = {tags(v)["wq-manager"]: v for v in found["volumes"]}
    by_iface = {i["NetworkInterfaceId"]: i for i in found["interfaces"]}
    addresses = {a["NetworkInterfaceId"]: a for a in found["addresses"]}
    ips = sorted(i["PrivateIpAddress"] for i in found["interfaces"])
    for inst in found["instances"]:
        t = tags(inst)
        assert t["wq-role"] == "manager" and t["wq-manager"] in ("m0", "m1", "m2")
        (eni,) = inst["NetworkInterfaces"]
        iface = by_iface[eni["NetworkInterfaceId"]]
        assert tags(iface)["wq-manager"] == t["wq-manager"]
        assert eni["NetworkInterfaceId"] in addresses
        template = launched_from(aws, inst)
        assert template["IamInstanceProfile"] == {"Name": f"wq-{NAME}-manager"}
        assert template["MetadataOptions"] == {"HttpTokens": "required"}
        assert template["InstanceType"] == "t3.small"
        script = user_data(aws, inst)
        assert script == base64.b64decode(template["UserData"]).decode()
        me = iface["PrivateIpAddress"]
        # Its slot's data volume: attached at boot, mounted as the data directory.
        volume = volumes[t["wq-manager"]]
        assert f"-m provision.volume --region us-east-1 {volume['VolumeId']} " in script
        assert f'mount_data {volume["VolumeId"]} "$WQ_ROOT/data"' in script
        assert "WQ_DATA_DIR=$WQ_ROOT/data\n" in script and "RequiresMountsFor=" in script
        # The package is read with the instance role: no presigned URL that would expire.
        assert f"fetch_package s3://wq-{NAME}-" in script and "X-Amz-" not in script
        assert "WQ_EC2_RELAUNCH_MANAGERS=on\n" in script
        assert "WQ_TLS_CERT=$WQ_ROOT/tls.pem\n" in script
        assert f"/wq/{NAME}/{t['wq-manager']}/tls-key" in script
        assert f"WQ_NODE_ID={t['wq-manager']}\n" in script
        assert f"WQ_RAFT={me}:7000\n" in script
        (peers,) = [
            line[len("WQ_PEERS=") :] for line in script.splitlines() if line.startswith("WQ_PEERS=")
        ]
        assert sorted(peers.split(",")) == [f"{ip}:7000=http://{ip}:8100" for ip in ips if ip != me]
        assert "WQ_HTTP=0.0.0.0:8000\n" in script and f"WQ_INTERNAL_HTTP={me}:8100\n" in script
        assert "WQ_BACKEND=ec2\n" in script and "WQ_MAX_WORKERS=6\n" in script
        assert f"-m provision.parameter --region us-east-1 /wq/{NAME}/secret" in script
        assert "systemctl enable --now wq-node.service" in script and "Restart=always" in script
    for alarm in found["alarms"]:
        action = alarm["AlarmName"].rsplit(".", 1)[1]
        assert alarm["AlarmActions"] == [f"arn:aws:automate:us-east-1:ec2:{action}"]
        assert (
            alarm["MetricName"]
            == {"recover": "StatusCheckFailed_System", "reboot": "StatusCheckFailed_Instance"}[
                action
            ]
        )


def check_roles(aws):
    iam = aws["iam"]
    for role in ("manager", "worker"):
        name = f"wq-{NAME}-{role}"
        trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
        assert iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
        (policy_name,) = iam.list_role_policies(RoleName=name)["PolicyNames"]
        doc = iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        assert_least_privilege(doc, NAME)
        (profile,) = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        assert profile["RoleName"] == name


def check_secrets_stay_secret(env, aws, first):
    values = [
        aws["ssm"].get_parameter(Name=f"/wq/{NAME}/{p}", WithDecryption=True)["Parameter"]
        for p in ("secret", "api-key", "ca-key", "m0/tls-key", "m1/tls-key", "m2/tls-key")
    ]
    assert all(v["Type"] == "SecureString" and len(v["Value"]) >= 32 for v in values)
    for v in values:
        assert v["Value"] not in first.stdout + first.stderr
        for inst in ours(aws)["instances"]:
            data = aws["ec2"].describe_instance_attribute(
                InstanceId=inst["InstanceId"], Attribute="userData"
            )
            assert v["Value"] not in base64.b64decode(data["UserData"]["Value"]).decode()
    assert env["AWS_SECRET_ACCESS_KEY"] not in first.stdout + first.stderr
    # The API key is printed only when asked for.
    assert provision(env, "api-key").stdout.strip() == values[1]["Value"]


@pytest.mark.parametrize(
    "args, field",
    [
        (["up", "--wait", "0"], "--client-cidr"),
        (["up", "--client-cidr", "10.0.0.0/33", "--wait", "0"], "client_cidr"),
        (["up", "--client-cidr", "10.0.0.1/8", "--wait", "0"], "client_cidr"),
        (["up", "--client-cidr", CIDR, "--managers", "4"], "managers"),
        (["up", "--client-cidr", CIDR, "--min-workers", "5", "--max-workers", "2"], "min_workers"),
        (["status", "--region", "mars"], "region"),
    ],
)
def test_bad_settings_are_refused_before_touching_aws(env, args, field):
    done = provision({**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, *args, check=False)
    assert done.returncode == 2 and field in done.stderr, done.stderr


def test_waiting_for_health_reports_each_manager(make_cluster):
    """`up` waits on this: healthy managers, a minority one (503) and one that never answers."""
    from provision.health import wait_healthy

    cluster = make_cluster()
    dead = "http://127.0.0.1:9"
    assert wait_healthy(cluster.urls, timeout=20, interval=0.5) == {
        url: "healthy" for url in cluster.urls
    }
    assert wait_healthy([dead], timeout=0) == {dead: "unreachable"}
    cluster.kill_node(0)
    cluster.kill_node(1)
    alone = cluster.url(2)
    wait_until(
        lambda: wait_healthy([alone], timeout=0) == {alone: "unhealthy (HTTP 503)"},
        30,
        "the node left alone to report itself unhealthy",
    )


def test_upgrade_replaces_followers_then_the_leader_keeping_volumes_and_interfaces(
    moto_url, make_cluster, tmp_path, monkeypatch, capsys
):
    """`upgrade` against the moto server, with three local nodes standing in for the
    managers' public URLs (they answer /healthz and /status; moto's addresses answer nothing)."""
    apply_env(monkeypatch, moto_url)
    c = Clients.connect("us-east-1")
    d = Deployment(name="uptest", client_cidr=CIDR, max_workers=6).validate(for_up=True)
    up(c, d)
    cluster = make_cluster()
    leader = f"m{cluster.wait_leader()}"
    urls = {f"m{i}": cluster.url(i) for i in range(3)}.__getitem__
    fleet = EC2Fleet(c, d, urls)
    before = {m: fleet.instance(m) for m in fleet.members()}
    volumes = {m: v["VolumeId"] for m, v in aws_finders.volumes(c, d).items()}
    interfaces = {m: i["NetworkInterfaceId"] for m, i in aws_finders.interfaces(c, d).items()}

    # The same checkout: nothing to do.
    assert upgrade(c, d, step_timeout=30, urls=urls) == []

    # Another checkout: the followers are replaced first, then the leader.
    source = tmp_path / "checkout"
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, source / name)
    with open(source / "README.md", "a") as f:
        f.write("\nA change.\n")
    capsys.readouterr()
    order = upgrade(c, d, step_timeout=30, source=source, urls=urls)
    followers = sorted(m for m in before if m != leader)
    assert order == followers + [leader]
    terminated = [
        line.split()[2]
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("terminated manager")
    ]
    assert terminated == order
    templates = aws_finders.templates(c, d)
    after = {m: fleet.instance(m) for m in fleet.members()}
    for m, new in after.items():
        old = before[m]
        assert new["InstanceId"] != old["InstanceId"]
        assert [n["NetworkInterfaceId"] for n in new["NetworkInterfaces"]] == [interfaces[m]]
        assert new["PrivateIpAddress"] == old["PrivateIpAddress"]
        assert templates[m]["DefaultVersionNumber"] == 2
        assert fleet.current(m)
        script = user_data_of(c.ec2, new)
        assert script != user_data_of(c.ec2, old)
        assert volumes[m] in script and "WQ_MAX_WORKERS=6\n" in script  # the `up` settings
        (gone,) = c.ec2.describe_instances(InstanceIds=[old["InstanceId"]])["Reservations"]
        assert gone["Instances"][0]["State"]["Name"] == "terminated"
    assert {m: v["VolumeId"] for m, v in aws_finders.volumes(c, d).items()} == volumes
    assert {m: i["NetworkInterfaceId"] for m, i in aws_finders.interfaces(c, d).items()} == (
        interfaces
    )

    # Again with nothing new: nothing replaced.
    assert upgrade(c, d, step_timeout=30, source=source, urls=urls) == []
    assert {m: fleet.instance(m)["InstanceId"] for m in after} == {
        m: i["InstanceId"] for m, i in after.items()
    }
    down(c, d)
    assert aws_finders.volumes(c, d) == {} and aws_finders.templates(c, d) == {}


def user_data_of(ec2, inst) -> str:
    data = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="userData")
    return base64.b64decode(data["UserData"]["Value"]).decode()
