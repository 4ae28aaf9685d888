"""`python -m provision up|upgrade|down|status|ca|api-key`: deploy the managers to AWS, upgrade
them one at a time, and remove them."""

from __future__ import annotations

import argparse
import sys

from botocore.exceptions import BotoCoreError, ClientError

from provision.deployment import HTTP_PORT, Deployment, SettingsError
from provision.upgrade import STEP_TIMEOUT

DEFAULTS = Deployment()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m provision",
        description="Deploy the work queue's managers to AWS (EC2, with workers started on "
        "demand by the leader), upgrade them one at a time, list what a deployment owns, or "
        "remove it all. "
        "Credentials and region come from the usual AWS configuration "
        "(`aws configure`, AWS_PROFILE, ...); every resource is tagged "
        "wq-cluster=NAME.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--name",
        default=DEFAULTS.name,
        help=f"deployment name, 1-20 of a-z 0-9 - [default: {DEFAULTS.name}]",
    )
    common.add_argument(
        "--region", default=DEFAULTS.region, help=f"AWS region [default: {DEFAULTS.region}]"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        parents=[common],
        help="create or repair a deployment, wait until every manager is healthy, print their URLs",
        description="Create whatever the deployment lacks and find the rest: "
        "running it again creates nothing twice, and relaunches a "
        "terminated manager with its old address, identity and data volume "
        "(the leader also does that by itself).",
    )
    up.add_argument(
        "--client-cidr",
        required=True,
        help="addresses allowed to reach the public API on port "
        f"{HTTP_PORT}, e.g. 203.0.113.7/32 (required)",
    )
    up.add_argument(
        "--managers",
        type=int,
        default=DEFAULTS.managers,
        help=f"manager count, 3, 5 or 7 [default: {DEFAULTS.managers}]",
    )
    up.add_argument(
        "--manager-type",
        default=DEFAULTS.manager_type,
        help=f"manager instance type [default: {DEFAULTS.manager_type}]",
    )
    up.add_argument(
        "--worker-type",
        default=DEFAULTS.worker_type,
        help=f"worker instance type [default: {DEFAULTS.worker_type}]",
    )
    up.add_argument(
        "--min-workers",
        type=int,
        default=DEFAULTS.min_workers,
        help=f"workers kept running at least [default: {DEFAULTS.min_workers}]",
    )
    up.add_argument(
        "--max-workers",
        type=int,
        default=DEFAULTS.max_workers,
        help=f"workers at most, across the cluster [default: {DEFAULTS.max_workers}]",
    )
    up.add_argument(
        "--data-volume-gb",
        type=int,
        default=DEFAULTS.data_volume_gb,
        help="size of each manager's data volume (encrypted gp3), GiB; applies to volumes "
        f"created from then on [default: {DEFAULTS.data_volume_gb}]",
    )
    up.add_argument(
        "--subnet",
        default="",
        help="subnet id (instances need outbound internet access); default: the "
        "default VPC's subnet in the region's first zone",
    )
    up.add_argument(
        "--ami",
        default="",
        help="image for managers and workers; default: the latest Amazon Linux 2023 (x86_64)",
    )
    up.add_argument(
        "--wait",
        type=float,
        default=900,
        metavar="SECONDS",
        help="seconds to wait for every manager's /healthz; 0: do not wait [default: 900]",
    )

    upgrade = sub.add_parser(
        "upgrade",
        parents=[common],
        help="move the managers onto this checkout's package one at a time, followers first",
        description="Apply the settings of the last `up` again with this checkout's package, "
        "then replace each manager not running it, one at a time: followers first, the leader "
        "last; each replacement keeps its address and data volume and must be healthy and "
        "caught up with the leader before the next. Stops, saying why, at a step that does "
        "not get there, with the other managers serving. With nothing new it does nothing.",
    )
    upgrade.add_argument(
        "--step-timeout",
        type=float,
        default=STEP_TIMEOUT,
        metavar="SECONDS",
        help="seconds one manager may take to come back healthy and caught up "
        f"[default: {STEP_TIMEOUT:g}]",
    )

    down = sub.add_parser(
        "down",
        parents=[common],
        help="delete everything the deployment owns, workers and stored jobs included",
    )
    down.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_parser(
        "status", parents=[common], help="list the deployment's resources and its managers' health"
    )
    sub.add_parser(
        "ca",
        parents=[common],
        help="print the deployment's CA certificate, which clients verify the managers' "
        "HTTPS with, e.g. python -m provision ca > wq-ca.pem; wq --cacert wq-ca.pem ...",
    )
    sub.add_parser(
        "api-key",
        parents=[common],
        help="print the public API key (clients send "
        "it as X-API-Key), e.g. export WQ_API_KEY=$(python -m provision api-key)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k in Deployment.__dataclass_fields__}
    try:
        d = Deployment(**fields).validate(for_up=args.command == "up")
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "down" and not args.yes:
        if not sys.stdin.isatty():
            print("error: down deletes the deployment and its jobs; pass --yes", file=sys.stderr)
            return 2
        if (
            input(f"Delete deployment {d.name} in {d.region} and all its jobs? [y/N] ").lower()
            != "y"
        ):
            return 1
    try:
        return run(args, d)
    except (BotoCoreError, ClientError) as e:
        print(f"error: AWS refused: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, d: Deployment) -> int:
    from provision.aws import Clients

    c = Clients.connect(d.region)
    if args.command == "up":
        return _up(c, d, args.wait)
    if args.command == "upgrade":
        from provision.rolling import RollStopped
        from provision.upgrade import upgrade

        try:
            replaced = upgrade(c, d, step_timeout=args.step_timeout)
        except RollStopped as e:
            print(f"error: upgrade stopped: {e}", file=sys.stderr)
            return 1
        print(f"upgraded: {', '.join(replaced) or 'nothing, every manager was current'}")
        return 0
    if args.command == "down":
        from provision.down import down

        down(c, d)
        return 0
    if args.command in ("ca", "api-key"):
        from provision.aws import parameter

        name = d.ca_cert_parameter if args.command == "ca" else d.api_key_parameter
        value = parameter(c, name)
        if value is None:
            print(
                f"error: no parameter {name}: run `python -m provision up` first", file=sys.stderr
            )
            return 1
        print(value.rstrip("\n"))
        return 0
    from provision.status import managers, resources, table

    rows = resources(c, d)
    if not rows:
        print(f"deployment {d.name} in {d.region}: nothing exists")
        return 0
    print(table(rows, ("KIND", "ID", "DETAIL")))
    found = managers(c, d)
    if found:
        print()
        print(
            table(
                [list(m.values()) for m in found],
                ("MANAGER", "URL", "PRIVATE", "INSTANCE", "HEALTH"),
            )
        )
    return 0


def _up(c, d: Deployment, wait: float) -> int:
    from provision.health import wait_healthy
    from provision.status import managers, tls_context
    from provision.up import up

    up(c, d)
    context = tls_context(c, d)
    urls = [m["url"] for m in managers(c, d)]
    if wait > 0:
        print(
            f"waiting up to {wait:g}s for {len(urls)} managers to answer /healthz "
            "(a new deployment takes a few minutes)",
            file=sys.stderr,
        )
        states = wait_healthy(urls, wait, context=context)
    else:
        states = {url: "not checked" for url in urls}
    print("managers:")
    for url in urls:
        print(f"  {url}  {states[url]}")
    where = f"--name {d.name} --region {d.region}"
    print(
        "\ntry it:\n"
        f"  export WQ_API_KEY=$(python -m provision api-key {where})\n"
        f"  python -m provision ca {where} > wq-ca.pem\n"
        f'  curl --cacert wq-ca.pem -H "X-API-Key: $WQ_API_KEY" -X PUT --data-binary @FILE '
        f"'{urls[0]}/enqueue?iterations=1000'\n"
        f'  curl --cacert wq-ca.pem -H "X-API-Key: $WQ_API_KEY" -X POST '
        f"'{urls[0]}/pullCompleted?top=10'"
    )
    healthy = all(s == "healthy" for s in states.values())
    if wait > 0 and not healthy:
        print(
            "error: not every manager became healthy; see `python -m provision status` and "
            "/var/log/wq-bootstrap.log on the instance",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
