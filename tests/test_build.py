"""synth build: Dask shard tasks, determinism, failures, resume, readers and s3 output."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from synth import provenance
from synth import store as zs
from synth.build import build, make_shard
from synth.errors import SynthError
from synth.info import store_info, verify_store
from synth.manifest import load_manifest
from tests.build_process import build_command, start_build
from tests.conftest import free_port, store_digest, write_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("m") / "m.yaml")


@pytest.fixture(scope="module")
def reference(manifest_path, tmp_path_factory) -> tuple[Path, object]:
    """The store built uninterrupted by a local cluster of 2 worker processes."""
    url = tmp_path_factory.mktemp("ref") / "ref.zarr"
    summary = build(load_manifest(manifest_path), str(url), workers=2, progress=False)
    return url, summary


def test_local_cluster_builds_complete_sound_store(reference):
    url, summary = reference
    assert summary.n == 40 and summary.n_shards == 10 and summary.shards_built == 10
    assert sum(summary.kinds.values()) == 40
    rep = verify_store(str(url), spot_checks=4)
    assert rep.ok, rep.problems
    assert rep.shards_checked == 10
    recs = zs.shard_records(str(url))
    covered = np.zeros(40, int)
    for r in recs.values():
        covered[r["start"] : r["stop"]] += 1
    assert (covered == 1).all()
    attrs = zs.read_attrs(str(url))
    assert attrs["complete"] and attrs["manifest"]["name"] == "test"
    assert set(attrs["fingerprints"]) == {"samples", "tex"}
    assert "zarr" in attrs["versions"]
    assert attrs["generator"] == provenance.generator()


def test_each_sample_matches_make_shard(reference, manifest_path):
    """The store holds exactly what the pure shard function makes (no worker-side drift)."""
    url, _ = reference
    m = load_manifest(manifest_path)
    arrays, record = make_shard(m, 3)
    got = zs.StoreReader(str(url)).read_range(12, 16, ("prompt", "query", "mask", "kind", "seed"))
    arrays["prompt"], arrays["query"] = arrays["images"][:, 0], arrays["images"][:, 1]
    for k in got:
        np.testing.assert_array_equal(got[k], arrays[k])


def test_one_worker_equals_two(reference, manifest_path, tmp_path):
    url, _ = reference
    other = tmp_path / "one.zarr"
    build(load_manifest(manifest_path), str(other), workers=1, progress=False)
    assert store_digest(other) == store_digest(url)


def test_zarr_and_tensorstore_read_the_same(reference):
    import tensorstore as ts

    url, _ = reference
    g = zarr.open_group(str(url), mode="r")
    for name in ("images", "mask", "meta/kind", "meta/bbox"):
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{url}/{name}/"}}
        via_ts = ts.open(spec, read=True).result().read().result()
        np.testing.assert_array_equal(np.asarray(via_ts), g[name][:])


def test_different_manifest_refused_without_overwrite(reference, tmp_path):
    url, _ = reference
    other = write_manifest(tmp_path / "other.yaml", seed=8)
    with pytest.raises(SynthError, match="different manifest.*--overwrite"):
        build(load_manifest(other), str(url), workers=1, progress=False)


def test_rerun_of_complete_store_builds_nothing(reference, manifest_path):
    url, _ = reference
    before = store_digest(url)
    summary = build(load_manifest(manifest_path), str(url), workers=1, progress=False)
    assert summary.shards_built == 0 and summary.shards_reused == 10
    assert store_digest(url) == before


def test_partial_build_then_resume_equals_reference(reference, manifest_path, tmp_path):
    url, _ = reference
    out = tmp_path / "partial.zarr"
    m = load_manifest(manifest_path)
    build(m, str(out), workers=1, progress=False, shards=[0, 5, 9])
    assert sorted(zs.shard_records(str(out))) == [0, 5, 9]
    summary = build(m, str(out), workers=1, progress=False)
    assert summary.shards_built == 7 and summary.shards_reused == 3
    assert store_digest(out) == store_digest(url)


def _coco_manifest(tmp_path: Path, fx, n: int) -> Path:
    """``n`` triples (local_texture or none) over a ``write_coco_fixture`` dataset."""
    coco = {
        "name": "coco",
        "kind": "coco",
        "ann_file": str(fx.ann_file),
        "image_root": str(fx.image_root),
    }
    return write_manifest(
        tmp_path / "coco.yaml",
        n=n,
        sources={"images": [coco], "textures": [{"name": "tex", "kind": "samples"}]},
        mix={"local_texture": 0.5, "none": 0.5},
    )


def test_resume_refused_when_a_source_changed(tmp_path):
    """Finishing a store from edited annotations would mix old and new triples."""
    from tests.coco_fixture import write_coco_fixture

    fx = write_coco_fixture(tmp_path / "coco")
    man = _coco_manifest(tmp_path, fx, n=8)
    out = tmp_path / "c.zarr"
    build(load_manifest(man), str(out), workers=1, progress=False, shards=[0])
    doc = json.loads(fx.ann_file.read_text())
    doc["annotations"].pop()
    fx.ann_file.write_text(json.dumps(doc))
    with pytest.raises(SynthError, match=r"c\.zarr: changed .*source 'coco' .*--overwrite"):
        build(load_manifest(man), str(out), workers=1, progress=False)
    assert sorted(zs.shard_records(str(out))) == [0]
    summary = build(load_manifest(man), str(out), workers=1, progress=False, overwrite=True)
    assert summary.shards_built == 2 and verify_store(str(out)).ok


def test_resume_refused_when_the_generator_changed(manifest_path, tmp_path, monkeypatch):
    """Another numpy (or synth) may draw other bytes for the missing shards."""
    m, out = load_manifest(manifest_path), tmp_path / "g.zarr"
    build(m, str(out), workers=1, progress=False, shards=[0])
    real = provenance.generator()
    other = {**real, "packages": {**real["packages"], "numpy": "0.0"}}
    monkeypatch.setattr(provenance, "generator", lambda: other)
    with pytest.raises(SynthError, match=r"numpy \S+ -> 0\.0.*--overwrite"):
        build(m, str(out), workers=1, progress=False)
    assert sorted(zs.shard_records(str(out))) == [0]


def test_complete_store_is_reused_after_the_generator_changed(
    reference, manifest_path, monkeypatch
):
    """Nothing is left to make, so nothing can mix: a finished store stays usable."""
    url, _ = reference
    before = store_digest(url)
    real = provenance.generator()
    monkeypatch.setattr(provenance, "generator", lambda: {**real, "code": "0123456789abcdef"})
    summary = build(load_manifest(manifest_path), str(url), workers=1, progress=False)
    assert summary.shards_built == 0 and summary.shards_reused == 10
    assert store_digest(url) == before


def test_worker_with_another_generator_writes_nothing(manifest_path, tmp_path, monkeypatch):
    """Worker processes run the real generator; this client claims another one."""
    real = provenance.generator()
    monkeypatch.setattr(provenance, "generator", lambda: {**real, "code": "0123456789abcdef"})
    out = tmp_path / "w.zarr"
    with pytest.raises(SynthError, match=r"worker on .*0123456789abcdef -> .*every worker"):
        build(load_manifest(manifest_path), str(out), workers=1, progress=False)
    assert zs.shard_records(str(out)) == {}


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def _wait_for(pred, timeout: float = 120, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


@pytest.fixture(params=["no-nanny", "nanny"])
def external_cluster(request):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1; with a nanny, a
    killed worker process is started again, as on a local cluster."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    _wait_port(port)
    addr = f"tcp://127.0.0.1:{port}"
    nanny = [] if request.param == "nanny" else ["--no-nanny"]
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dask",
                    "worker",
                    addr,
                    "--nthreads",
                    "1",
                    *nanny,
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    from distributed import Client

    with Client(addr) as c:
        c.wait_for_workers(2, timeout=60)
    yield addr, procs
    for p in procs:  # a nanny's worker process is in its session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@pytest.fixture(scope="module")
def big_reference(manifest_path, tmp_path_factory) -> Path:
    """The 160-triple store built by one worker, uninterrupted."""
    url = tmp_path_factory.mktemp("big") / "big-ref.zarr"
    build(load_manifest(manifest_path).with_overrides(n=160), str(url), workers=1, progress=False)
    return url


def test_external_scheduler_and_worker_killed_mid_build(
    external_cluster, reference, big_reference, tmp_path, manifest_path
):
    """Kill one worker once shards are landing: the build completes with the same bytes, and
    a shard finished before the kill is not made again: the lost worker costs only the shards
    it was given (issue 20)."""
    from distributed import Client

    addr, _ = external_cluster
    ref_url, _ = reference
    m = load_manifest(manifest_path).with_overrides(n=160)
    out = tmp_path / "killed.zarr"
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["summary"] = build(m, str(out), scheduler=addr, progress=False)
        except BaseException as e:  # surfaced by the assertion below
            result["error"] = e

    def records() -> dict[int, int]:
        """Shard -> inode of its record object: a shard made again replaces the object."""
        return {int(p.parent.name): p.stat().st_ino for p in out.glob("build/records/c/*/0")}

    def kill_a_worker_between_results(dask_scheduler) -> list[str] | None:
        """On the scheduler: SIGKILL a worker that is making a shard and holds no finished one.

        It runs in the scheduler's event loop, so nothing changes between the look and the
        kill (and it is defined here so that it travels by value). Returns the keys the worker
        was given (running or next), or None when no worker qualifies now.
        """
        for ws in dask_scheduler.workers.values():
            shards = {str(ts.key) for ts in ws.processing}
            held = [ts for ts in ws.has_what if str(ts.key).startswith("synth-shard-")]
            if shards and not held:
                os.kill(ws.pid, signal.SIGKILL)
                return sorted(shards)
        return None

    t = threading.Thread(target=run)
    t.start()
    in_flight, before = None, {}
    # not the default client: it closes before the build's own, and a default client closed
    # out of order would leave dask's global scheduler set to a client that is gone
    with Client(addr, set_as_default=False) as c:
        assert _wait_for(lambda: len(records()) >= 8)  # both workers have finished shards
        while in_flight is None and t.is_alive():
            before = records()
            in_flight = c.run_on_scheduler(kill_a_worker_between_results)
            time.sleep(0.01)
    t.join(timeout=600)
    assert "error" not in result, result.get("error")
    assert in_flight is not None, "no worker was ever between results: futures are held"
    assert len(before) < 40, "the build finished before the worker was killed"
    summary = result["summary"]
    assert summary.shards_built == 40
    recs = zs.shard_records(str(out))
    covered = np.zeros(160, int)
    for r in recs.values():
        covered[r["start"] : r["stop"]] += 1
    assert (covered == 1).all()
    after = records()
    made_again = {s for s, ino in before.items() if after[s] != ino}
    given = {int(k.rsplit("-", 1)[1]) for k in in_flight}
    assert made_again <= given, f"finished shards made again: {sorted(made_again - given)}"
    assert store_digest(out) == store_digest(big_reference)  # no .partial of the killed write
    # the first 10 shards are the small reference's shards: same triples whatever N is
    small = zs.StoreReader(str(ref_url)).read_range(0, 40, ("prompt", "mask"))
    big = zs.StoreReader(str(out)).read_range(0, 40, ("prompt", "mask"))
    np.testing.assert_array_equal(small["prompt"], big["prompt"])


def test_a_write_cut_short_by_a_kill_leaves_no_partial_file(reference, manifest_path, tmp_path):
    """A worker killed while writing leaves its ``.partial`` file behind, after the store was
    opened; the complete store must still be the reference, byte for byte."""
    from distributed import LocalCluster

    write_shard = zs.write_shard

    def write_then_leave_a_partial(url, shard, *args, **kwargs):
        write_shard(url, shard, *args, **kwargs)
        if shard == 2:  # as the write of a worker killed before its rename
            Path(url, "mask", "c", "2", "0", "0.4242.partial").write_bytes(b"cut")

    out = tmp_path / "cut.zarr"
    with (
        pytest.MonkeyPatch.context() as mp,
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
    ):
        mp.setattr(zs, "write_shard", write_then_leave_a_partial)
        build(
            load_manifest(manifest_path),
            str(out),
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    assert store_digest(out) == store_digest(reference[0])


def test_sigkill_whole_build_then_resume_is_byte_identical(manifest_path, reference, tmp_path):
    url, _ = reference
    out = tmp_path / "resumed.zarr"
    cmd, env = build_command(manifest_path, out)
    p = start_build(cmd, env)
    landed = _wait_for(lambda: len(zs.shard_records(str(out))) >= 1 or p.poll() is not None)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert landed and p.returncode == -signal.SIGKILL, p.stderr.read().decode()[-2000:]
    n_done = len(zs.shard_records(str(out)))
    assert 1 <= n_done < 10, f"{n_done} shards before the kill"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming: {n_done} of 10" in r.stderr
    assert store_digest(out) == store_digest(url)
    assert not list(out.rglob("*.partial"))


def test_corrupt_inputs_are_skipped_listed_and_strict_fails(tmp_path):
    from tests.coco_fixture import write_coco_fixture

    fx = write_coco_fixture(tmp_path / "coco", corrupt_image=True, missing_image=True)
    man = _coco_manifest(tmp_path, fx, n=24)
    m = load_manifest(man)
    summary = build(m, str(tmp_path / "c.zarr"), workers=1, progress=False)
    assert sum(summary.kinds.values()) == 24
    bad = {k.split("[")[0] for k, _, _ in summary.skipped_inputs()}
    assert summary.skipped_uses and bad == {"coco"}
    assert summary.skipped_uses == sum(c for _, c, _ in summary.skipped_inputs())
    reasons = " ".join(r for _, _, r in summary.skipped_inputs())
    assert "corrupt.jpg" in reasons or "missing.jpg" in reasons
    assert f"skipped      {summary.skipped_uses} input uses" in summary.render()
    assert verify_store(str(tmp_path / "c.zarr")).ok
    info = store_info(str(tmp_path / "c.zarr"))
    assert info["skipped_uses"] == summary.skipped_uses
    assert [(s["input"], s["uses"]) for s in info["skipped"]] == [
        (k, c) for k, c, _ in summary.skipped_inputs()
    ]
    with pytest.raises(SynthError, match="sample"):
        build(m, str(tmp_path / "strict.zarr"), workers=1, progress=False, strict=True)


def test_s3_output_against_moto(moto_s3, reference, manifest_path, monkeypatch):
    url, _ = reference
    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": moto_s3}}
    s3_url = "s3://synth-test/stores/demo.zarr"
    summary = build(
        load_manifest(manifest_path), s3_url, workers=1, progress=False, storage_options=opts
    )
    assert summary.shards_built == 10
    rep = verify_store(s3_url, storage_options=opts)
    assert rep.ok, rep.problems
    local = zs.StoreReader(str(url)).read_range(0, 40, ("prompt", "query", "mask"))
    remote = zs.StoreReader(s3_url, storage_options=opts).read_range(
        0, 40, ("prompt", "query", "mask")
    )
    for k in local:
        np.testing.assert_array_equal(local[k], remote[k])


def test_an_input_that_failed_is_read_once_per_shard_and_counted_per_use(tmp_path, monkeypatch):
    """A corrupt image drawn by several triples of a shard is read once; every draw counts."""
    import synth.sources.coco as coco
    from tests.coco_fixture import write_coco_fixture

    fx = write_coco_fixture(tmp_path / "coco", corrupt_image=True)
    m = load_manifest(_coco_manifest(tmp_path, fx, n=24)).with_overrides(shard_size=24)
    reads: list[str] = []
    real = coco.read_bytes
    monkeypatch.setattr(coco, "read_bytes", lambda url: reads.append(url) or real(url))
    _, record = make_shard(m, 0)
    (entry,) = [s for s in record["skipped"] if "corrupt" in s["reason"]]
    assert len(entry["uses"]) >= 2, entry
    assert sum("corrupt.jpg" in u for u in reads) == 1
    assert len({tuple(u) for u in entry["uses"]}) == len(entry["uses"])  # one per draw
    reads.clear()
    make_shard(m, 0)  # a new task reads it again (the file may have been fixed meanwhile)
    assert sum("corrupt.jpg" in u for u in reads) == 1


def test_source_problems_are_counted_stored_shown_and_strict_fails(tmp_path):
    """Annotations the COCO index rejects reach the summary, the store and synth info."""
    from click.testing import CliRunner

    from synth.cli import main
    from tests.coco_fixture import MALFORMED_CASES, write_coco_fixture

    fx = write_coco_fixture(tmp_path / "coco", malformed=list(MALFORMED_CASES))
    man = _coco_manifest(tmp_path, fx, n=8)
    url = str(tmp_path / "p.zarr")
    summary = build(load_manifest(man), url, workers=1, progress=False)
    n_bad = len(MALFORMED_CASES)
    assert len(summary.source_problems) == n_bad
    text = summary.render()
    assert f"rejected     {n_bad} source item(s) while indexing (coco {n_bad})" in text
    assert text.count("  - coco: instances.json: annotation ") == 5
    assert f"... {n_bad - 5} more: synth info {url} --problems" in text
    stored = zs.read_source_problems(url)
    assert stored == summary.source_problems
    assert zs.read_attrs(url)["source_problems"] == {"count": n_bad, "by_source": {"coco": n_bad}}
    listed = CliRunner().invoke(main, ["info", url, "--problems"]).output
    short = CliRunner().invoke(main, ["info", url]).output
    for aid, fragment in MALFORMED_CASES.values():
        assert f"coco: instances.json: annotation {aid}: " in listed and fragment in listed
    assert short.count("instances.json: annotation") == 5
    r = CliRunner().invoke(main, ["build", str(man), "-o", str(tmp_path / "s.zarr"), "--strict"])
    assert r.exit_code == 2 and not (tmp_path / "s.zarr").exists(), r.output
    (line,) = [ln for ln in r.output.splitlines() if ln.startswith("error: ")]
    assert f"{n_bad} source item(s) rejected while indexing" in line and "--strict" in line
