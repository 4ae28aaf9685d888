"""`python -m provision.parameter NAME FILE`: copy an SSM SecureString into a private file.

Instances run this at boot with their role's credentials, so the cluster secret and the API
key reach them without appearing in user data, in logs or on a command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError


def fetch(name: str, region: str, attempts: int = 10) -> str:
    ssm = boto3.client("ssm", region_name=region)
    for attempt in range(attempts):
        try:
            return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except (BotoCoreError, ClientError) as e:
            # A fresh instance's role credentials can take a few seconds to appear.
            if attempt == attempts - 1:
                raise SystemExit(f"cannot read parameter {name}: {e}") from None
            time.sleep(min(2**attempt, 15))
    raise AssertionError("unreachable")


def write_private(path: str, value: str) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m provision.parameter",
        description="Write an SSM SecureString parameter's value to a "
        "file readable only by its owner.",
    )
    p.add_argument("name", help="parameter name, e.g. /wq/NAME/secret")
    p.add_argument("file", help="file to write (mode 0600, replaced atomically)")
    p.add_argument("--region", required=True, help="AWS region of the parameter")
    args = p.parse_args(argv)
    write_private(args.file, fetch(args.name, args.region))
    print(f"wrote parameter {args.name} to {args.file}", file=sys.stderr)


if __name__ == "__main__":
    main()
