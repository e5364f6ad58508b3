"""Object storage end to end: build to s3:// and train from it (a local moto server)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from synth.cli import main
from tests.conftest import write_manifest

pytestmark = pytest.mark.slow
SECRET = "s3cr3t-never-print-me"


def test_build_to_s3_and_train_from_it_without_leaking_credentials(moto_s3, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    # credentials come from the usual environment, as users set them
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    url = "s3://synth-test/remote/store.zarr"
    endpoint = f"endpoint_url={moto_s3}"
    man = write_manifest(tmp_path / "m.yaml", n=16, shard_size=8)
    r = CliRunner().invoke(
        main,
        [
            "build",
            str(man),
            "-o",
            url,
            "--workers",
            "1",
            "--no-progress",
            "--storage-option",
            endpoint,
        ],
    )
    assert r.exit_code == 0, r.output
    logs = r.output
    r = CliRunner().invoke(main, ["info", url, "--storage-option", endpoint])
    assert r.exit_code == 0 and "samples    16 / 16" in r.output, r.output
    logs += r.output
    args = ["train", url, "--out", str(tmp_path / "run"), "--encoder", "resnet18", "--size", "64"]
    args += ["--decoder-channels", "32,16,16,8,8", "--batch-size", "8", "--max-steps", "2"]
    args += ["--workers", "0", "--no-progress", "--device", "cpu", "--storage-option", endpoint]
    with pytest.warns(UserWarning, match="random weights"):
        r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "trained 2 steps" in r.output
    logs += r.output
    logs += "".join(
        p.read_text() for p in (tmp_path / "run").rglob("*") if p.suffix in (".json", ".jsonl")
    )
    assert SECRET not in logs
