"""`provision status`: every resource the deployment owns, and its managers' health."""

from __future__ import annotations

import ssl

from node.scaling.backends.ec2 import ROLE_TAG
from node.scaling.backends.managers import MANAGER_TAG
from provision import aws
from provision.aws import Clients
from provision.deployment import HTTP_PORT, Deployment
from provision.health import probe


def resources(c: Clients, d: Deployment) -> list[tuple[str, str, str]]:
    """(kind, id, detail) of everything found; empty when nothing is left."""
    rows = []
    group = aws.security_group(c, d)
    if group is not None:
        rows.append(("security group", group["GroupId"], d.security_group))
    for name, kind in aws.parameters(c, d).items():
        rows.append(("parameter", name, kind))
    bucket = d.bucket(c.account)
    if aws.bucket_exists(c, bucket):
        rows.append(("bucket", bucket, ""))
    for name in (d.manager_role, d.worker_role):
        if aws.role(c, name) is not None:
            rows.append(("role", name, ""))
        if aws.profile(c, name) is not None:
            rows.append(("instance profile", name, ""))
    for m, iface in sorted(aws.interfaces(c, d).items()):
        rows.append(
            ("network interface", iface["NetworkInterfaceId"], f"{m} {iface['PrivateIpAddress']}")
        )
    for m, volume in sorted(aws.volumes(c, d).items()):
        held = ",".join(a["InstanceId"] for a in volume.get("Attachments", [])) or "not attached"
        rows.append(
            (
                "data volume",
                volume["VolumeId"],
                f"{m} {volume['Size']} GiB {volume['VolumeType']} {volume['State']} {held}",
            )
        )
    for m, template in sorted(aws.templates(c, d).items()):
        rows.append(
            (
                "launch template",
                template["LaunchTemplateName"],
                f"{m} version {template['DefaultVersionNumber']}",
            )
        )
    for m, address in sorted(aws.addresses(c, d).items()):
        rows.append(("elastic IP", address["AllocationId"], f"{m} {address['PublicIp']}"))
    for inst in aws.instances(c, d):
        tags = aws.tags_of(inst)
        rows.append(
            (
                "instance",
                inst["InstanceId"],
                f"{tags.get(ROLE_TAG, '?')} {tags.get(MANAGER_TAG, '')} "
                f"{inst['State']['Name']}".replace("  ", " "),
            )
        )
    for name in aws.alarms(c, d):
        rows.append(("alarm", name, ""))
    return rows


def managers(c: Clients, d: Deployment) -> list[dict]:
    """Each manager's public URL, private address, instance and health."""
    context = tls_context(c, d)
    addresses = aws.addresses(c, d)
    instances = aws.managers(c, d, aws.NOT_TERMINATED)
    out = []
    for m, iface in sorted(aws.interfaces(c, d).items()):
        public = addresses.get(m, {}).get("PublicIp")
        url = f"https://{public}:{HTTP_PORT}" if public else ""
        inst = instances.get(m)
        out.append(
            {
                "manager": m,
                "url": url,
                "private": iface["PrivateIpAddress"],
                "instance": f"{inst['InstanceId']} {inst['State']['Name']}" if inst else "none",
                "health": probe(url, context=context) if url else "no address",
            }
        )
    return out


def tls_context(c: Clients, d: Deployment) -> ssl.SSLContext | None:
    """A context that trusts the deployment's CA; None when it has none (yet)."""
    pem = aws.parameter(c, d.ca_cert_parameter)
    return None if pem is None else ssl.create_default_context(cadata=pem)


def table(rows: list[tuple | list], header: tuple) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )
