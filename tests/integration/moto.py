"""A real moto server on a free port, for tests of the AWS code through real boto3 calls."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

import boto3
import requests

from bench.cluster import free_ports, wait_until


@contextmanager
def moto_server(tmp_path):
    (port,) = free_ports(1)
    log = open(tmp_path / "moto.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(url + "/moto-api/", timeout=2).status_code == 200,
            30,
            "the moto server",
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def aws_env(url: str) -> dict[str, str]:
    """Environment for boto3 to talk to the moto server, never to AWS."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "moto-secret-access-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SESSION_TOKEN": "testing",
    }


def clients(url: str, *names: str) -> dict:
    """boto3 clients talking to the moto server at `url`, without touching os.environ."""
    env = aws_env(url)
    session = boto3.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
        region_name="us-east-1",
    )
    return {name: session.client(name, endpoint_url=url) for name in names}


def apply_env(monkeypatch, url: str) -> None:
    for key, value in aws_env(url).items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    assert os.environ["AWS_ENDPOINT_URL"] == url
