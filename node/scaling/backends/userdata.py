"""User data (cloud-init shell scripts) for manager and worker instances.

Both scripts install Python 3.11 and a C compiler, make a virtual environment, download the
project's source archive, build and install it (the C kernel is compiled for the instance
itself), and copy the cluster secret from SSM Parameter Store into a private file with the
instance role's credentials. No secret and no AWS key is in the user data itself. A worker
downloads the archive from a presigned S3 URL its manager signed at launch, runs `python -m
worker` and powers the instance off when it exits (the instance is launched with shutdown
behaviour "terminate", so nothing is left billing, also when a step fails). A manager reads
the archive from S3 with its instance role (its user data lives in a launch template and may
run days after `provision up`, long after any URL would have expired), attaches its slot's
data volume and mounts it as the node's data directory, writes its node configuration and
runs the node under systemd, restarted whenever it stops.

The steps that touch the operating system or the instance (installing Python, the AWS CLI,
the instance's id, mounting, systemd, power-off) are small shell functions at the top. A test
replaces them by pointing WQ_BOOT_OVERRIDES at a file that redefines them, and runs the rest
of the script as it runs on an instance.
"""

from __future__ import annotations

import re
import shlex

# A presigned package URL only has to outlive the boot; it also ends with the signing
# credentials (a manager's role credentials have at least ten minutes left when boto3 signs).
PACKAGE_URL_SECONDS = 3600

_SAFE = re.compile(r"[A-Za-z0-9_.,:/=@+-]*")

PRELUDE = r"""#!/bin/bash
# {title}
set -euo pipefail
WQ_ROOT=/opt/wq
WQ_LOG=/var/log/wq-bootstrap.log
# The serial console, which EC2's GetConsoleOutput reads: the steps, and the log's last lines
# when the script fails, go there too, so a machine that never comes up can say why.
WQ_CONSOLE=/dev/console

console() {{
    printf 'wq-bootstrap: %s\n' "$@" >>"$WQ_CONSOLE" 2>/dev/null || true
}}
step() {{
    echo "$*"
    console "$*"
}}
console_tail() {{
    tail -n 20 "$WQ_LOG" 2>/dev/null | sed 's/^/wq-bootstrap: /' >>"$WQ_CONSOLE" 2>/dev/null || true
}}
install_python() {{
    dnf install -y python3.11 python3.11-pip python3.11-devel gcc >/dev/null
    command -v python3.11
}}
{functions}
if [ -n "${{WQ_BOOT_OVERRIDES:-}}" ]; then . "$WQ_BOOT_OVERRIDES"; fi

mkdir -p "$WQ_ROOT"
exec >>"$WQ_LOG" 2>&1
step "bootstrap started $(date -u +%FT%TZ)"
{on_exit}
step "installing Python"
PYTHON=$(install_python)
"$PYTHON" -m venv "$WQ_ROOT/venv"
step "downloading the package"
{download}
step "installing the package"
"$WQ_ROOT/venv/bin/pip" install --quiet --disable-pip-version-check "$WQ_ROOT/{package}"
"$WQ_ROOT/venv/bin/python" -c 'import worker.compute as c; print("SHA-512 kernel:", c.KERNEL)'
step "reading the cluster secret"
"$WQ_ROOT/venv/bin/python" -m provision.parameter --region {region} {secret_parameter} "$WQ_ROOT/secret"
"""

WORKER = r"""power_off() {
    shutdown -h now
}
"""

WORKER_MAIN = r"""step "starting the worker"
WQ_SECRET_FILE="$WQ_ROOT/secret" WQ_WORKER_BACKEND=ec2 "$WQ_ROOT/venv/bin/python" -m worker \
    --managers {managers} --id {worker_id} --idle-timeout {idle_timeout:g} || true
step "worker exited $(date -u +%FT%TZ)"
"""

MANAGER = r"""fetch_package() {
    # $1 s3://BUCKET/KEY, $2 file: with the instance role (Amazon Linux has the AWS CLI).
    aws s3 cp --only-show-errors "$1" "$2"
}
instance_id() {
    local token
    token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
        http://169.254.169.254/latest/api/token)
    curl -fsS -H "X-aws-ec2-metadata-token: $token" \
        http://169.254.169.254/latest/meta-data/instance-id
}
mount_data() {
    # $1 volume id, $2 directory: mount the attached volume there, making a file system only
    # on a volume that has none (a new slot's); mounted again at every boot.
    local dev="" found
    for _ in $(seq 90); do
        for d in "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${1/-/}" /dev/sdf /dev/xvdf; do
            if [ -b "$d" ]; then dev=$d; break 2; fi
        done
        sleep 2
    done
    if [ -z "$dev" ]; then echo "volume $1 attached but no device appeared"; return 1; fi
    set +e; blkid -p "$dev" >/dev/null; found=$?; set -e
    case $found in
        0) ;;
        2) mkfs.xfs -q -L wq-data "$dev" ;;
        *) echo "blkid $dev failed ($found)"; return 1 ;;
    esac
    mkdir -p "$2"
    mountpoint -q "$2" || mount "$dev" "$2"
    grep -q " $2 " /etc/fstab ||
        echo "UUID=$(blkid -s UUID -o value "$dev") $2 xfs defaults,nofail 0 2" >>/etc/fstab
}
start_node() {
    id -u wq >/dev/null 2>&1 || useradd --system --home-dir "$WQ_ROOT" --shell /sbin/nologin wq
    chown -R wq "$WQ_ROOT/data" "$WQ_ROOT/secret" "$WQ_ROOT/api-key" "$WQ_ROOT/tls.pem" \
        "$WQ_ROOT/tls.key"
    cat >/etc/systemd/system/wq-node.service <<UNIT
[Unit]
Description=Replicated work queue manager
After=network-online.target
Wants=network-online.target
RequiresMountsFor=$WQ_ROOT/data

[Service]
User=wq
EnvironmentFile=$WQ_ROOT/node.env
ExecStart=$WQ_ROOT/venv/bin/python -m node
Restart=always
RestartSec=2
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now wq-node.service
}
"""

MANAGER_MAIN = r""""$WQ_ROOT/venv/bin/python" -m provision.parameter --region {region} {api_key_parameter} "$WQ_ROOT/api-key"
step "reading the TLS certificate"
# The certificate's SHA-256, so that a new certificate is a new launch template version:
# {tls_fingerprint}
"$WQ_ROOT/venv/bin/python" -m provision.parameter --region {region} {tls_cert_parameter} "$WQ_ROOT/tls.pem"
"$WQ_ROOT/venv/bin/python" -m provision.parameter --region {region} {tls_key_parameter} "$WQ_ROOT/tls.key"
step "attaching the data volume {volume}"
"$WQ_ROOT/venv/bin/python" -m provision.volume --region {region} {volume} "$(instance_id)"
mount_data {volume} "$WQ_ROOT/data"
cat >"$WQ_ROOT/node.env" <<ENV
{env}
ENV
start_node
step "node started $(date -u +%FT%TZ)"
"""


def _check(**values: str) -> None:
    for name, value in values.items():
        if not _SAFE.fullmatch(str(value)):
            raise ValueError(f"{name}: {value!r} has characters not allowed in user data")


def _prelude(
    title: str,
    functions: str,
    on_exit: str,
    *,
    download: str,
    package: str,
    region: str,
    secret_parameter: str,
) -> str:
    _check(package=package, region=region, secret_parameter=secret_parameter)
    return PRELUDE.format(
        title=title,
        functions=functions,
        on_exit=on_exit,
        download=download,
        package=package,
        region=region,
        secret_parameter=secret_parameter,
    )


def worker_script(
    *,
    package_url: str,
    package: str,
    region: str,
    secret_parameter: str,
    manager_urls: list[str],
    worker_id: str,
    idle_timeout: float,
) -> str:
    """`package_url`: a presigned URL of the package, which the worker downloads with curl."""
    managers = ",".join(manager_urls)
    _check(managers=managers, worker_id=worker_id)
    return _prelude(
        "Worker bootstrap: install the package, run one worker, power off when it exits.",
        WORKER,
        # Failed: the log's tail to the console first; power_off still sees the status.
        """trap 'status=$?; set +e; [ "$status" -eq 0 ] || console_tail; (exit "$status"); """
        """power_off' EXIT""",
        download=f'curl -fsSL --retry 8 --retry-connrefused -o "$WQ_ROOT/{package}" '
        f"{shlex.quote(package_url)}",
        package=package,
        region=region,
        secret_parameter=secret_parameter,
    ) + WORKER_MAIN.format(managers=managers, worker_id=worker_id, idle_timeout=idle_timeout)


def manager_script(
    *,
    package: str,
    region: str,
    secret_parameter: str,
    api_key_parameter: str,
    tls_parameters: tuple[str, str],
    tls_fingerprint: str,
    volume: str,
    node_env: dict[str, str],
) -> str:
    """`package`: s3://BUCKET/KEY, read with the instance role, so a manager launched any time
    later (a relaunch) still gets it. `volume`: the slot's data volume, attached at boot and
    mounted as the node's data directory. `tls_parameters`: the SSM parameters of its
    certificate and key, written to $WQ_ROOT/tls.pem and tls.key; `tls_fingerprint` names the
    certificate in the script. `node_env` holds the node's WQ_* settings; paths may use
    $WQ_ROOT."""
    values = dict(
        api_key_parameter=api_key_parameter,
        tls_cert_parameter=tls_parameters[0],
        tls_key_parameter=tls_parameters[1],
        tls_fingerprint=tls_fingerprint,
        volume=volume,
    )
    _check(
        package=package,
        **values,
        **{k: v.replace("$WQ_ROOT", "") for k, v in node_env.items()},
    )
    name = package.rsplit("/", 1)[-1]
    return _prelude(
        "Manager bootstrap: install the package, mount the data volume, configure the node, "
        "run it under systemd.",
        MANAGER,
        """trap 'status=$?; set +e; [ "$status" -eq 0 ] || console_tail' EXIT""",
        download=f'fetch_package {package} "$WQ_ROOT/{name}"',
        package=name,
        region=region,
        secret_parameter=secret_parameter,
    ) + MANAGER_MAIN.format(
        region=region, env="\n".join(f"{k}={v}" for k, v in node_env.items()), **values
    )
