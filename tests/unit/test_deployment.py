"""Deployment pieces that need no AWS: least-privilege IAM policies, settings validation,
and the node configuration a manager's user data writes."""

import pytest

from provision.deployment import Deployment, SettingsError
from provision.policies import EC2_TRUST, manager_policy, worker_policy

NAME = "demo"
WORKER_ROLE = "arn:aws:iam::123456789012:role/wq-demo-worker"
MANAGER_ROLE = "arn:aws:iam::123456789012:role/wq-demo-manager"


def manager(**overrides) -> dict:
    args = dict(
        name=NAME,
        region="us-east-1",
        account="123456789012",
        subnet="subnet-1",
        security_group="sg-1",
        images=["ami-1"],
        worker_role_arn=WORKER_ROLE,
        manager_role_arn=MANAGER_ROLE,
        bucket="wq-demo-b",
        parameters=["/wq/demo/secret", "/wq/demo/api-key"],
    )
    return manager_policy(**{**args, **overrides})


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def assert_least_privilege(doc: dict, name: str) -> None:
    """No wildcard action; `*` resources only for EC2 describe calls (which support nothing
    narrower); instance, template and volume actions bound to the deployment's tags; PassRole
    to its two roles."""
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        actions = as_list(st["Action"])
        resources = as_list(st["Resource"])
        assert all("*" not in a for a in actions), st
        if "*" in resources:
            assert all(a.startswith("ec2:Describe") for a in actions), st
        tag_condition = st.get("Condition", {}).get("StringEquals", {})
        if "ec2:TerminateInstances" in actions or "ec2:GetConsoleOutput" in actions:
            assert tag_condition.get("ec2:ResourceTag/wq-cluster") == name, st
            assert tag_condition.get("ec2:ResourceTag/wq-role") == "worker", st
        if "ec2:RunInstances" in actions and any(":instance/" in r for r in resources):
            assert tag_condition.get("aws:RequestTag/wq-cluster") == name, st
            assert tag_condition.get("aws:RequestTag/wq-role") in ("worker", "manager"), st
        if "ec2:RunInstances" in actions and any(":launch-template/" in r for r in resources):
            assert tag_condition.get("ec2:ResourceTag/wq-cluster") == name, st
        if "ec2:AttachVolume" in actions:
            assert tag_condition.get("ec2:ResourceTag/wq-cluster") == name, st
            assert st["Condition"].get("Null") == {"ec2:ResourceTag/wq-manager": "false"}, st
        if "ec2:CreateTags" in actions:
            assert tag_condition == {"ec2:CreateAction": "RunInstances"}, st
        if "iam:PassRole" in actions:
            assert set(resources) <= {
                f"arn:aws:iam::123456789012:role/wq-{name}-{role}" for role in ("worker", "manager")
            }, st
        for r in resources:
            if r != "*":
                assert not r.endswith(":*") and r.count("*") <= 1, st


def test_the_manager_policy_is_least_privilege():
    assert_least_privilege(manager(), NAME)


def test_the_worker_may_only_read_the_cluster_secret():
    doc = worker_policy(
        region="us-east-1", account="123456789012", secret_parameter="/wq/demo/secret"
    )
    assert_least_privilege(doc, NAME)
    (st,) = doc["Statement"]
    assert st["Action"] == "ssm:GetParameter"
    assert st["Resource"] == "arn:aws:ssm:us-east-1:123456789012:parameter/wq/demo/secret"


def test_the_manager_launches_only_into_its_network_from_its_image():
    (st,) = [s for s in manager()["Statement"] if s["Sid"] == "LaunchIntoOurNetworkFromOurImage"]
    assert set(st["Resource"]) == {
        "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-1",
        "arn:aws:ec2:us-east-1:123456789012:security-group/sg-1",
        "arn:aws:ec2:us-east-1:123456789012:network-interface/*",
        "arn:aws:ec2:us-east-1:123456789012:volume/*",
        "arn:aws:ec2:us-east-1::image/ami-1",
    }


@pytest.mark.parametrize(
    "broken",
    [
        {"Sid": "x", "Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
        {"Sid": "x", "Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": "*"},
        {
            "Sid": "x",
            "Effect": "Allow",
            "Action": "ec2:TerminateInstances",
            "Resource": "arn:aws:ec2:us-east-1:123456789012:instance/*",
        },
        {
            "Sid": "x",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": "arn:aws:ec2:us-east-1:123456789012:instance/*",
        },
        {
            "Sid": "x",
            "Effect": "Allow",
            "Action": "ec2:GetConsoleOutput",
            "Resource": "arn:aws:ec2:us-east-1:123456789012:instance/*",
        },
        {"Sid": "x", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"},
        {
            "Sid": "x",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": "arn:aws:ec2:us-east-1:123456789012:launch-template/*",
        },
        {
            "Sid": "x",
            "Effect": "Allow",
            "Action": "ec2:AttachVolume",
            "Resource": "arn:aws:ec2:us-east-1:123456789012:volume/*",
            "Condition": {"StringEquals": {"ec2:ResourceTag/wq-cluster": "demo"}},
        },
        {"Sid": "x", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*"},
    ],
)
def test_the_checker_catches_broad_grants(broken):
    doc = manager()
    doc["Statement"].append(broken)
    with pytest.raises(AssertionError):
        assert_least_privilege(doc, NAME)


def test_only_ec2_may_assume_the_roles():
    (st,) = EC2_TRUST["Statement"]
    assert st["Principal"] == {"Service": "ec2.amazonaws.com"} and st["Action"] == "sts:AssumeRole"


@pytest.mark.parametrize(
    "settings, field",
    [
        (dict(name="Upper"), "name"),
        (dict(name="-x"), "name"),
        (dict(name="a" * 21), "name"),
        (dict(region="useast1"), "region"),
        (dict(managers=2), "managers"),
        (dict(managers=4), "managers"),
        (dict(client_cidr=""), "client_cidr"),
        (dict(client_cidr="10.0.0.1/8"), "client_cidr"),
        (dict(client_cidr="nonsense"), "client_cidr"),
        (dict(min_workers=3, max_workers=2), "min_workers"),
        (dict(max_workers=1001), "min_workers"),
        (dict(worker_type="big"), "worker_type"),
        (dict(data_volume_gb=0), "data_volume_gb"),
        (dict(data_volume_gb=16385), "data_volume_gb"),
    ],
)
def test_bad_deployment_settings_name_the_field(settings, field):
    with pytest.raises(SettingsError) as e:
        Deployment(**{"client_cidr": "203.0.113.7/32", **settings}).validate(for_up=True)
    assert str(e.value).startswith(field)


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(name="prod-1", region="eu-west-1", managers=5, client_cidr="0.0.0.0/0"),
        dict(client_cidr="2001:db8::/32", max_workers=0),
    ],
)
def test_good_deployment_settings_pass(settings):
    Deployment(**{"client_cidr": "203.0.113.7/32", **settings}).validate(for_up=True)


def test_the_manager_user_data_configures_a_valid_node(tmp_path):
    """The env file the manager bootstrap writes is a node configuration `python -m node`
    accepts, with the peers' stable private addresses."""
    from pathlib import Path

    from node.config import load_config
    from node.scaling.backends.userdata import manager_script
    from provision.ca import issue, new_ca
    from provision.package import Package
    from provision.up import node_env

    d = Deployment(name="demo", client_cidr="203.0.113.7/32")
    ifaces = {f"m{i}": {"PrivateIpAddress": f"10.0.0.{10 + i}"} for i in range(3)}
    package = Package(Path("/x/replicated_work_queue-0.1.0.tar.gz"), "ab" * 32)
    env = node_env(
        d,
        "m1",
        ifaces,
        subnet="subnet-1",
        group="sg-1",
        ami="ami-1",
        package=package,
        account="123456789012",
    )
    script = manager_script(
        package=env["WQ_EC2_PACKAGE"],
        region=d.region,
        secret_parameter=d.secret_parameter,
        api_key_parameter=d.api_key_parameter,
        tls_parameters=d.tls_parameters("m1"),
        tls_fingerprint="sha256:" + "0" * 64,
        volume="vol-0123456789abcdef0",
        node_env=env,
    )
    assert "# sha256:" + "0" * 64 in script
    written = script.split("<<ENV\n", 1)[1].split("\nENV\n", 1)[0]
    environ = dict(line.split("=", 1) for line in written.splitlines())
    environ = {k: v.replace("$WQ_ROOT", str(tmp_path)) for k, v in environ.items()}
    (tmp_path / "secret").write_text("s" * 43)
    (tmp_path / "api-key").write_text("k" * 43)
    # The certificate `up` issues for the manager's public and private addresses.
    tls = issue(new_ca("demo"), "m1", ["198.51.100.1", "10.0.0.11"])
    (tmp_path / "tls.pem").write_text(tls.cert)
    (tmp_path / "tls.key").write_text(tls.key)
    cfg = load_config([], environ)
    assert cfg.tls_cert == f"{tmp_path}/tls.pem" and cfg.tls_key == f"{tmp_path}/tls.key"
    assert cfg.log_file == f"{tmp_path}/data/logs/node.log"  # on the data volume
    assert cfg.raft == "10.0.0.11:7000" and cfg.url == "http://10.0.0.11:8100"
    assert cfg.http == "0.0.0.0:8000" and cfg.internal_http == "10.0.0.11:8100"
    assert sorted(p.raft for p in cfg.peers) == ["10.0.0.10:7000", "10.0.0.12:7000"]
    assert cfg.backend == "ec2" and cfg.api_key == "k" * 43 and cfg.cluster_name == "demo"
    assert cfg.ec2_package == f"s3://wq-demo-123456789012-us-east-1/{package.key}"
    assert cfg.ec2_secret_parameter == "/wq/demo/secret"
    assert cfg.ec2_relaunch_managers == "on"


def test_the_package_is_a_deterministic_source_archive(tmp_path):
    """Instances compile the C kernel themselves, so they get sources; the same sources give
    the same bytes, hence the same S3 key, so a second `up` uploads nothing."""
    import tarfile

    from provision.package import build_sdist

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = build_sdist(tmp_path / "a"), build_sdist(tmp_path / "b")
    assert first.digest == second.digest and first.key == second.key
    with tarfile.open(first.path) as tar:
        names = tar.getnames()
    top = "replicated_work_queue-0.1.0/"
    assert all(n.startswith(top) for n in names)
    for needed in (
        "setup.py",
        "setup.cfg",
        "pyproject.toml",
        "worker/_sha512.c",
        "node/app.py",
        "node/http/static/dashboard.html",
        "protocol/wire.py",
        "client/__main__.py",
        "provision/parameter.py",
        "LICENSE",
        "node/replication/syncobj/LICENSE.pysyncobj",
    ):
        assert top + needed in names
    assert not [n for n in names if n.endswith((".so", ".pyc")) or "__pycache__" in n]


def test_a_manager_certificate_is_issued_again_only_when_it_must(monkeypatch):
    import provision.ca
    from provision.ca import issue, needs_new, new_ca

    ca, other = new_ca("demo"), new_ca("demo")  # the same name, another key
    names = ["198.51.100.1", "10.0.0.10"]
    cert = issue(ca, "m0", names).cert
    assert needs_new(cert, ca.cert, list(reversed(names))) is None
    assert needs_new(cert, other.cert, names) == "signed by another CA"
    assert needs_new(cert, ca.cert, ["198.51.100.2", "10.0.0.10"]) == "its addresses changed"
    monkeypatch.setattr(provision.ca, "RENEW_DAYS", provision.ca.CERT_DAYS + 1)
    assert needs_new(cert, ca.cert, names) == f"it expires within {provision.ca.CERT_DAYS + 1} days"
