"""Shared fixtures: small manifests and store digests used by build, preview and CLI tests."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
import yaml

# Keep every worker process single-threaded: the suite runs on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def write_manifest(path: Path, **overrides: object) -> Path:
    """A small manifest over the embedded samples (64x64, 40 triples, shards of 4)."""
    doc: dict[str, object] = {
        "version": 1,
        "name": "test",
        "seed": 7,
        "n": 40,
        "size": [64, 64],
        "shard_size": 4,
        "sources": {
            "images": [{"name": "samples", "kind": "samples"}],
            "textures": [{"name": "tex", "kind": "samples"}],
        },
    }
    doc.update(overrides)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def store_digest(root: str | Path) -> dict[str, str]:
    """sha256 of every file of a local store (a store holds no timings: all of it is content)."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def small_manifest(tmp_path: Path) -> Path:
    return write_manifest(tmp_path / "m.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def moto_s3():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    endpoint = f"http://127.0.0.1:{server._port}"
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket="synth-test")
    yield endpoint
    server.stop()
