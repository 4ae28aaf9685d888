"""`python -m provision.volume VOLUME INSTANCE`: attach a manager slot's data volume.

A manager's user data runs this at boot with its instance role. The volume holds the slot's
Raft log, snapshot and store; it is attached to one instance at a time. While the slot's
previous instance is shutting down the volume is still attached to it, so this waits for it
to be released, and never takes it from an instance that keeps running: then it gives up
after `--timeout`, and the boot fails saying why, rather than start a second copy of the
manager.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import boto3
from botocore.exceptions import ClientError

DEVICE = "/dev/sdf"
# Shutting down takes an instance a minute or two; the volume is released after that.
TIMEOUT = 900.0


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def attach(
    ec2: Any, volume: str, instance: str, *, timeout: float = TIMEOUT, interval: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = ec2.describe_volumes(VolumeIds=[volume])["Volumes"][0]
        held = [a for a in found.get("Attachments", []) if a["State"] != "detached"]
        if any(a["InstanceId"] == instance and a["State"] == "attached" for a in held):
            return
        if found["State"] == "available" and not held:
            try:
                ec2.attach_volume(VolumeId=volume, InstanceId=instance, Device=DEVICE)
            except ClientError as e:
                if _code(e) not in ("VolumeInUse", "IncorrectState"):
                    raise
        if time.monotonic() > deadline:
            holders = ", ".join(f"{a['InstanceId']} ({a['State']})" for a in held) or "nobody"
            raise SystemExit(
                f"volume {volume} is not attached to {instance} after {timeout:g}s; "
                f"it is attached to {holders}"
            )
        time.sleep(interval)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m provision.volume",
        description="Attach a manager slot's data volume to an instance, waiting while the "
        "slot's previous instance releases it.",
    )
    p.add_argument("volume", help="volume id, vol-...")
    p.add_argument("instance", help="instance id, i-... (this instance's)")
    p.add_argument("--region", required=True, help="AWS region of both")
    p.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT,
        help=f"seconds to wait for the volume to be free [default: {TIMEOUT:g}]",
    )
    args = p.parse_args(argv)
    attach(
        boto3.client("ec2", region_name=args.region),
        args.volume,
        args.instance,
        timeout=args.timeout,
    )
    print(f"attached volume {args.volume} to {args.instance} as {DEVICE}", file=sys.stderr)


if __name__ == "__main__":
    main()
