"""synth build on SA-1B-format tars: index tasks on the cluster, reuse, locality, problems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from synth import build as build_module
from synth import store as zs
from synth.build import build, make_shard
from synth.errors import SourceError, SynthError
from synth.index.cache import index_url
from synth.info import render_info, store_info, verify_store
from synth.manifest import load_manifest
from tests.build_process import build_command, start_build
from tests.conftest import store_digest, write_manifest
from tests.sa1b_fixture import BAD_CASES, write_sa1b_corpus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

MIX = {"local_texture": 0.4, "disappearance_inpaint": 0.3, "appearance_paste": 0.3}


def _manifest(path: Path, tars: str, cache: Path, n: int = 16, shard: int = 4, **src) -> Path:
    doc = {
        "version": 1,
        "name": "sa1b-test",
        "seed": 11,
        "n": n,
        "size": [48, 64],
        "shard_size": shard,
        "sources": {
            "images": [
                {"name": "sa1b", "kind": "sa1b", "tars": tars, "cache_dir": str(cache), **src}
            ],
            "textures": [{"name": "tex", "kind": "samples"}],
        },
        "mix": MIX,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_index_tasks_run_on_the_cluster_once_and_any_worker_count_gives_the_same_bytes(
    tmp_path,
):
    fx = write_sa1b_corpus(tmp_path / "tars", n_tars=3, per_tar=4)
    cache = tmp_path / "cache"
    m = load_manifest(
        _manifest(tmp_path / "m.yaml", "tars/*.tar", cache, min_area_frac=0, min_side=2)
    )
    two = build(m, str(tmp_path / "two.zarr"), workers=2, progress=False)
    ix = two.extra["index"]
    assert (ix["tars"], ix["built"]) == (3, 3)
    assert "indexes      3 tar(s) counted on the cluster" in two.render()
    assert verify_store(str(tmp_path / "two.zarr")).ok
    recorded = zs.read_attrs(str(tmp_path / "two.zarr"))["indexes"]["sa1b"]
    source = build_module._catalog(m).images[0]
    assert recorded["tars"] == [[r.name, r.key] for r in source.tar_set.refs]
    assert all(Path(index_url(str(cache), r)).is_file() for r in source.tar_set.refs)
    (summary,) = (cache / "tar-index-v1" / "sets").iterdir()  # the plan's is the source's
    assert recorded["summary"] == str(summary)
    assert [t.name for t in fx.tars] == [name for name, _ in recorded["tars"]]
    assert "indexes    sa1b: 3 per-tar index(es) in " in render_info(
        store_info(str(tmp_path / "two.zarr"))
    )
    one = build(m, str(tmp_path / "one.zarr"), workers=1, progress=False)
    assert "index" not in one.extra  # every tar counted already: no index task, no rebuild
    assert store_digest(tmp_path / "one.zarr") == store_digest(tmp_path / "two.zarr")


def test_run_indexes_lets_the_scheduler_forget_each_tar_it_has_counted(tmp_path, monkeypatch):
    """A counted tar's task kept until the end is recounted if its worker dies (issue 20)."""
    import tqdm.auto
    from distributed import Client, LocalCluster

    from synth.index.cluster import plan_indexes, run_indexes
    from tests.test_cluster import _eventually

    write_sa1b_corpus(tmp_path / "tars", n_tars=3, per_tar=2)
    plans = plan_indexes(
        load_manifest(_manifest(tmp_path / "m.yaml", "tars/*.tar", tmp_path / "c"))
    )
    counted: list[int] = []

    class Bar(tqdm.auto.tqdm):  # run_indexes's bar moves once per tar whose counts it has read
        def update(self, n: float | None = 1) -> bool | None:
            counted.append(len(counted) + 1)
            assert _eventually(lambda: len(held()) <= 3 - counted[-1]), (counted, held())
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    with (  # one thread: the tars are counted one after another
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):

        def held() -> list[str]:
            return [k for k in cluster.scheduler.tasks if str(k).startswith("synth-index-")]

        stats = run_indexes(client, plans, progress=False, say=lambda _: None)
        assert (stats["tars"], stats["built"], counted) == (3, 3, [1, 2, 3])
        assert _eventually(lambda: not held()), held()
    assert plan_indexes(load_manifest(tmp_path / "m.yaml")) == []  # summaries written


def test_bad_tars_are_counted_listed_and_strict_stops(tmp_path):
    write_sa1b_corpus(tmp_path / "tars", n_tars=2, per_tar=3, bad=list(BAD_CASES))
    man = _manifest(tmp_path / "m.yaml", "tars/*.tar", tmp_path / "cache", n=12, shard=6)
    url = str(tmp_path / "bad.zarr")
    summary = build(load_manifest(man), url, workers=1, progress=False)
    assert sum(summary.kinds.values()) == 12 and verify_store(url).ok
    assert len(summary.source_problems) == 4
    assert "rejected     4 source item(s) while indexing (sa1b 4)" in summary.render()
    skipped = summary.skipped_inputs()
    assert [k for k, _, _ in skipped] == ["sa1b[1]"] and "cannot decode image" in skipped[0][2]
    listed = render_info(store_info(url), every_problem=True)
    for case, fragment in BAD_CASES.items():
        assert fragment in listed, case
    with pytest.raises(SourceError, match=r"4 source item\(s\) rejected.*--strict"):
        build(load_manifest(man), str(tmp_path / "strict.zarr"), workers=1, strict=True)


def test_a_shard_loads_the_indexes_of_a_few_tars_only(tmp_path, monkeypatch):
    """Pools walk the tars one at a time: a shard of 4 triples meets at most 2 of 5 tars."""
    import synth.sources.sa1b as sa1b

    write_sa1b_corpus(tmp_path / "tars", n_tars=5, per_tar=20, masks_per_image=2, hw=(24, 32))
    m = load_manifest(_manifest(tmp_path / "m.yaml", "tars/*.tar", tmp_path / "cache", n=40))
    build_module._CATALOGS.clear()
    loaded: list[str] = []
    real = sa1b.load_index
    monkeypatch.setattr(sa1b, "load_index", lambda c, ref: loaded.append(ref.name) or real(c, ref))
    try:
        catalog = build_module._catalog(m)
        for shard in range(10):
            loaded.clear()
            catalog.images[0]._open.clear()
            arrays, _ = make_shard(m, shard)
            tars = set(np.asarray(arrays["base_index"]) // 20)
            assert 1 <= len(set(loaded)) <= 2 and {f"sa_{t:06d}.tar" for t in tars} <= set(loaded)
    finally:
        build_module._CATALOGS.clear()


def test_a_worker_that_sees_other_sources_writes_nothing(tmp_path, monkeypatch):
    from synth.sample import Catalog

    real = Catalog.fingerprints
    monkeypatch.setattr(
        Catalog, "fingerprints", lambda self, m: {**real(self, m), "samples": "0123456789abcdef"}
    )
    out = tmp_path / "w.zarr"
    with pytest.raises(SynthError, match=r"sees other sources .*'samples' 0123456789abcdef ->"):
        build(load_manifest(write_manifest(tmp_path / "m.yaml")), str(out), workers=1)
    assert zs.shard_records(str(out)) == {}


def test_a_catalog_kept_from_before_a_tar_changed_is_reopened_not_used(tmp_path):
    from synth.sample import Catalog

    fx = write_sa1b_corpus(tmp_path / "tars", n_tars=2, per_tar=2)
    m = load_manifest(_manifest(tmp_path / "m.yaml", "tars/*.tar", tmp_path / "cache"))
    build_module._CATALOGS.clear()
    try:
        before = build_module._catalog(m).fingerprints(m)
        write_sa1b_corpus(tmp_path / "other", n_tars=1, per_tar=1)
        fx.tars[1].write_bytes((tmp_path / "other" / "sa_000000.tar").read_bytes())
        now = Catalog.open(m).fingerprints(m)
        assert now != before
        build_module._check_sources(m, now)  # the stale catalog is dropped and reopened
        assert build_module._catalog(m).fingerprints(m) == now
        with pytest.raises(SynthError, match=r"sees other sources .*source 'sa1b' "):
            build_module._check_sources(m, before)
    finally:
        build_module._CATALOGS.clear()


def test_sigkilled_build_resumes_byte_identical(tmp_path):
    import os
    import signal
    import subprocess
    import time

    write_sa1b_corpus(tmp_path / "tars", n_tars=3, per_tar=4)
    man = _manifest(tmp_path / "m.yaml", "tars/*.tar", tmp_path / "cache", n=40, shard=4)
    ref = tmp_path / "ref.zarr"
    build(load_manifest(man), str(ref), workers=1, progress=False)
    out = tmp_path / "killed.zarr"
    cmd, env = build_command(man, out)
    p = start_build(cmd, env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None and not zs.shard_records(str(out)):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    n_done = len(zs.shard_records(str(out)))
    assert p.returncode == -signal.SIGKILL and 1 <= n_done < 10, p.stderr.read().decode()[-2000:]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming: {n_done} of 10" in r.stderr
    assert store_digest(out) == store_digest(ref)
