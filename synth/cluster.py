"""The one place that starts or connects to Dask: a validated recipe in, a ``Client`` out.

A :class:`ClusterRecipe` says where the shard tasks run: a local cluster of worker processes,
an existing scheduler, SLURM jobs (dask-jobqueue) or Kubernetes pods (the dask-kubernetes
operator). Recipes come from keyword arguments, a YAML file (``pipelines/*.yaml``) and CLI
overrides; validation happens before anything is started, so a typo or an option meant for
another backend fails in one line instead of after jobs were queued. Backends are imported
inside their branch: ``synth build`` on a laptop needs neither dask-jobqueue nor kr8s.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from synth.errors import ConfigError, SynthError

KINDS = ("local", "scheduler", "slurm", "k8s")

#: Options that only some backends understand, with the backends that do; ``kind``,
#: ``workers`` and ``threads_per_worker`` are valid everywhere.
_OWNERS: dict[str, tuple[str, ...]] = {
    "memory_limit": ("local", "slurm", "k8s"),
    "host": ("local", "slurm"),
    "dashboard_address": ("local", "slurm"),
    "security": ("local", "scheduler", "slurm"),
    "scheduler_address": ("scheduler",),
    "connect_timeout": ("scheduler",),
    "name": ("slurm", "k8s"),
    "env": ("slurm", "k8s"),
    "interface": ("slurm",),
    "cores_per_job": ("slurm",),
    "processes_per_job": ("slurm",),
    "memory_per_job": ("slurm",),
    "walltime": ("slurm",),
    "account": ("slurm",),
    "queue": ("slurm",),
    "job_extra_directives": ("slurm",),
    "job_script_prologue": ("slurm",),
    "python": ("slurm",),
    "local_directory": ("slurm",),
    "log_directory": ("slurm",),
    "image": ("k8s",),
    "namespace": ("k8s",),
    "resources": ("k8s",),
    "scheduler_service_type": ("k8s",),
    "volumes": ("k8s",),
    "volume_mounts": ("k8s",),
}

#: Keys of a recipe file that hold TLS paths; they become ``security``.
_TLS_KEYS = ("tls_ca_file", "tls_cert", "tls_key")

#: Names users reach for from other tools' docs, mapped to ours.
_ALIASES = {
    "n_workers": "workers",
    "nworkers": "workers",
    "threads": "threads_per_worker",
    "nthreads": "threads_per_worker",
    "cores": "cores_per_job",
    "processes": "processes_per_job",
    "memory": "memory_per_job",
    "project": "account",
    "partition": "queue",
    "scheduler": "scheduler_address",
    "address": "scheduler_address",
    "job_extra": "job_extra_directives",
    "env_extra": "job_script_prologue",
}

#: Options whose value is not a plain string; ``--cluster-option`` parses these as YAML.
_STRUCTURED_OPTIONS = frozenset(
    {
        "workers",
        "threads_per_worker",
        "cores_per_job",
        "processes_per_job",
        "env",
        "resources",
        "job_extra_directives",
        "job_script_prologue",
        "volumes",
        "volume_mounts",
    }
)

#: String options a YAML file may write as a bare number (``account: 12345``, ``memory: 0``).
_STR_OPTIONS = ("memory_limit", "memory_per_job", "account", "queue", "name", "namespace")

_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class TLSFiles:
    """PEM paths for mutual TLS: one CA, one certificate (and key) for every role.

    Dask's ``tls://`` needs both sides to present a certificate signed by the CA, so the same
    files serve the scheduler, the workers and this client; on SLURM they must sit on a file
    system the compute nodes see, as the job script passes the paths to ``dask worker``.
    """

    ca_file: str
    cert: str
    key: str | None = None

    def __post_init__(self) -> None:
        for opt, path in (
            ("tls_ca_file", self.ca_file),
            ("tls_cert", self.cert),
            ("tls_key", self.key),
        ):
            if path is not None and not Path(path).is_file():
                raise ConfigError(
                    f"{opt}: {path} does not exist (make certificates: pipelines/README.md)"
                )

    def security(self) -> Any:
        """A ``distributed.security.Security`` that requires encryption for every role."""
        from distributed.security import Security

        ca, cert = os.path.abspath(self.ca_file), os.path.abspath(self.cert)
        key = os.path.abspath(self.key) if self.key else None
        return Security(
            tls_ca_file=ca,
            tls_client_cert=cert,
            tls_client_key=key,
            tls_scheduler_cert=cert,
            tls_scheduler_key=key,
            tls_worker_cert=cert,
            tls_worker_key=key,
            require_encryption=True,
        )


@dataclass(frozen=True)
class ClusterRecipe:
    """Where and how many Dask workers run a build.

    ``None`` means "not set": each backend fills its own default, and an option set for a
    backend that does not use it is an error rather than silently ignored.

    Attributes:
        kind: ``local``, ``scheduler``, ``slurm`` or ``k8s``.
        workers: total worker processes (SLURM: jobs x ``processes_per_job``; K8s: pods).
        threads_per_worker: threads of each worker process; shard tasks are CPU-bound Python,
            so more processes beat more threads.
        memory_limit: per worker process (``4GB``, ``auto``, ``none``); SLURM derives it from
            ``memory_per_job`` when that is set.
        host: the local cluster's (or the SLURM scheduler's) bind address; 127.0.0.1 locally.
        dashboard_address: ``HOST:PORT`` or ``none``; default 127.0.0.1 on a free port.
        security: TLS files or a ready ``distributed.security.Security``.
        scheduler_address: an existing scheduler, ``tcp://HOST:8786`` or ``tls://HOST:8786``.
        connect_timeout: how long to try reaching ``scheduler_address``.
        name: SLURM job name / Kubernetes ``DaskCluster`` name.
        env: environment variables for the workers (SLURM job script, K8s containers).
        interface: SLURM network interface for scheduler and workers (``ib0``).
        cores_per_job, processes_per_job, memory_per_job, walltime, account, queue,
        job_extra_directives, job_script_prologue, python, local_directory, log_directory:
            one SLURM job's shape and its ``#SBATCH`` lines, as dask-jobqueue names them.
        image, namespace, resources, scheduler_service_type: the Kubernetes pods. On K8s
            ``env`` may also be a list of container env entries, so credentials can come
            from a Secret (``valueFrom.secretKeyRef``) instead of the recipe.
        volumes, volume_mounts: Kubernetes volumes mounted into the worker pods, so the
            manifest's source paths exist there too.
    """

    kind: str = "local"
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str | None = None
    host: str | None = None
    dashboard_address: str | None = None
    security: Any = None
    scheduler_address: str | None = None
    connect_timeout: str | None = None
    name: str | None = None
    env: Mapping[str, str] | tuple[Mapping[str, Any], ...] | None = None
    interface: str | None = None
    cores_per_job: int | None = None
    processes_per_job: int | None = None
    memory_per_job: str | None = None
    walltime: str | None = None
    account: str | None = None
    queue: str | None = None
    job_extra_directives: tuple[str, ...] | None = None
    job_script_prologue: tuple[str, ...] | None = None
    python: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    image: str | None = None
    namespace: str | None = None
    resources: Mapping[str, Mapping[str, str]] | None = None
    scheduler_service_type: str | None = None
    volumes: tuple[Mapping[str, Any], ...] | None = None
    volume_mounts: tuple[Mapping[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        for opt, owners in _OWNERS.items():
            if getattr(self, opt) is not None and self.kind not in owners:
                shown = {
                    "security": "tls_ca_file/tls_cert/tls_key",
                    "scheduler_address": "scheduler_address (--scheduler)",
                }.get(opt, opt)
                raise ConfigError(
                    f"{shown}: a {'/'.join(owners)} option, not valid with --cluster {self.kind}"
                )
        _positive_int("workers", self.workers)
        _positive_int("threads_per_worker", self.threads_per_worker)
        for opt in ("cores_per_job", "processes_per_job"):
            if getattr(self, opt) is not None:
                _positive_int(opt, getattr(self, opt))
        for opt in ("memory_limit", "memory_per_job"):
            _memory(opt, getattr(self, opt))
        for opt in ("job_extra_directives", "job_script_prologue"):
            value = getattr(self, opt)
            if value is not None and (
                isinstance(value, str) or not all(isinstance(v, str) for v in value)
            ):
                raise ConfigError(f"{opt}: expected a list of strings, got {value!r}")
        if self.env is not None and not _env_ok(self.env, allow_list=self.kind == "k8s"):
            raise ConfigError(f"env: expected a mapping of NAME: value strings, got {self.env!r}")
        for opt in ("volumes", "volume_mounts"):
            value = getattr(self, opt)
            if value is not None and not all(isinstance(v, Mapping) and "name" in v for v in value):
                raise ConfigError(f"{opt}: expected a list of Kubernetes {opt} entries with a name")
        if self.security is not None and not isinstance(self.security, TLSFiles):
            from distributed.security import Security

            if not isinstance(self.security, Security):
                raise ConfigError("security: expected TLS files or a distributed Security object")
        if self.host is not None and not self.host.strip():
            raise ConfigError("host: empty; use 127.0.0.1 (the default) or an interface address")
        if self.kind == "scheduler":
            self._check_scheduler()
        elif self.kind == "slurm":
            self._check_slurm()
        elif self.kind == "k8s":
            self._check_k8s()

    def _check_scheduler(self) -> None:
        if not self.scheduler_address:
            raise ConfigError(
                "scheduler_address: required with --cluster scheduler (--scheduler ADDR)"
            )
        if self.security is not None and not self.scheduler_address.startswith("tls://"):
            raise ConfigError(
                f"scheduler_address: {self.scheduler_address} with TLS configured; "
                "use tls://HOST:PORT"
            )

    def _check_slurm(self) -> None:
        ppj = self.processes_per_job or 1
        if self.workers < ppj:
            raise ConfigError(
                f"workers: {self.workers} < processes_per_job {ppj}; one SLURM job would start "
                f"{ppj} workers, lower processes_per_job"
            )
        if self.cores_per_job is not None and self.cores_per_job != ppj * self.threads_per_worker:
            raise ConfigError(
                f"cores_per_job: {self.cores_per_job} != processes_per_job {ppj} x "
                f"threads_per_worker {self.threads_per_worker}; set threads_per_worker: "
                f"{max(self.cores_per_job // ppj, 1)} or change cores_per_job"
            )
        if self.memory_per_job is not None and self.memory_limit is not None:
            raise ConfigError(
                "memory_limit: with --cluster slurm set memory_per_job (split across the job's "
                "workers) or memory_limit (per worker), not both"
            )
        if self.memory_per_job is None and self.memory_limit in (None, "auto", "none", "0"):
            raise ConfigError(
                "memory_per_job: required with --cluster slurm (e.g. 64GB), or set memory_limit "
                "per worker"
            )
        if self.walltime is not None and not _WALLTIME.match(str(self.walltime)):
            raise ConfigError(f"walltime: {self.walltime!r}; use HH:MM:SS or D-HH:MM:SS")

    def _check_k8s(self) -> None:
        if not self.image:
            raise ConfigError(
                "image: required with --cluster k8s (the synth image the workers run, "
                "see Dockerfile)"
            )
        if self.name is not None and not _K8S_NAME.match(self.name.replace("{uuid}", "x")):
            raise ConfigError(f"name: {self.name!r} is not a valid Kubernetes name (a-z, 0-9, -)")
        if self.resources is not None and (
            not isinstance(self.resources, Mapping)
            or set(self.resources) - {"limits", "requests"}
            or not all(isinstance(v, Mapping) for v in self.resources.values())
        ):
            raise ConfigError(
                "resources: expected {requests: {cpu: ..., memory: ...}, limits: {...}}"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ClusterRecipe:
        """A recipe from YAML-like data: flat keys, ``tls_*`` paths, env values as strings."""
        data = dict(data)
        known = {f.name for f in fields(cls)} - {"security"}
        for key in data:
            if key in known or key in _TLS_KEYS:
                continue
            hint = f"; did you mean {_ALIASES[key]}?" if key in _ALIASES else ""
            raise ConfigError(f"{key}: unknown cluster option{hint}")
        tls = {k: data.pop(k) for k in _TLS_KEYS if data.get(k) is not None}
        for k in _TLS_KEYS:
            data.pop(k, None)
        if tls:
            if "tls_ca_file" not in tls or "tls_cert" not in tls:
                raise ConfigError(
                    "tls_ca_file, tls_cert: TLS needs both (and tls_key unless "
                    "the key is inside the certificate file)"
                )
            data["security"] = TLSFiles(
                str(tls["tls_ca_file"]), str(tls["tls_cert"]), _opt_str(tls.get("tls_key"))
            )
        if isinstance(data.get("env"), Mapping):
            data["env"] = {str(k): str(v) for k, v in data["env"].items()}
        elif isinstance(data.get("env"), list):
            data["env"] = tuple(data["env"])
        for opt in ("job_extra_directives", "job_script_prologue", "volumes", "volume_mounts"):
            if isinstance(data.get(opt), list):
                data[opt] = tuple(data[opt])
        if data.get("walltime") is not None and not isinstance(data["walltime"], str):
            raise ConfigError(
                f"walltime: {data['walltime']!r} is not text; quote it ('02:00:00'), YAML reads "
                "2:00:00 as a number of seconds"
            )
        for opt in _STR_OPTIONS:
            if isinstance(data.get(opt), (int, float)) and not isinstance(data[opt], bool):
                data[opt] = str(data[opt])
        return cls(**{k: v for k, v in data.items() if v is not None})

    @classmethod
    def from_build_args(
        cls,
        *,
        workers: int = 2,
        threads_per_worker: int = 1,
        scheduler: str | None = None,
        memory_limit: str | None = "auto",
        security: Any = None,
    ) -> ClusterRecipe:
        """The recipe ``build(workers=..., scheduler=...)`` always meant: local or a scheduler."""
        if scheduler:
            return cls(
                kind="scheduler",
                workers=workers,
                threads_per_worker=threads_per_worker,
                scheduler_address=scheduler,
                security=security,
            )
        return cls(
            kind="local",
            workers=workers,
            threads_per_worker=threads_per_worker,
            memory_limit="none" if memory_limit is None else memory_limit,
            security=security,
        )

    @property
    def jobs(self) -> int:
        """SLURM jobs to submit so at least ``workers`` worker processes start."""
        return math.ceil(self.workers / (self.processes_per_job or 1))

    def dask_security(self) -> Any:
        """The ``Security`` object Dask wants, or None without TLS."""
        if isinstance(self.security, TLSFiles):
            return self.security.security()
        return self.security

    def describe(self) -> str:
        """One line for logs: the backend and its size, never credentials."""
        tls = ", TLS" if self.security is not None else ""
        if self.kind == "scheduler":
            return f"scheduler {self.scheduler_address}{tls}"
        if self.kind == "slurm":
            ppj = self.processes_per_job or 1
            return (
                f"slurm: {self.jobs} job(s) x {ppj} worker(s) x {self.threads_per_worker} "
                f"thread(s){tls}"
            )
        if self.kind == "k8s":
            return f"k8s: {self.workers} worker pod(s) of {self.image}"
        return (
            f"local: {self.workers} worker process(es) x {self.threads_per_worker} thread(s){tls}"
        )


def _positive_int(opt: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{opt}: {value!r}; expected a whole number >= 1")


def _memory(opt: str, value: str | None) -> None:
    if value is None or value in ("auto", "none", "0"):
        return
    from dask.utils import parse_bytes

    try:
        parse_bytes(value)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{opt}: {value!r} is not a size; use e.g. 4GB, 3.5GiB") from e


def _env_ok(env: Any, *, allow_list: bool) -> bool:
    """A NAME -> value mapping, or (Kubernetes) a list of EnvVar entries each with a name."""
    if isinstance(env, Mapping):
        return all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    return allow_list and all(isinstance(e, Mapping) and "name" in e for e in env)


def _k8s_env(env: Mapping[str, str] | tuple[Mapping[str, Any], ...] | None) -> Any:
    if not env:
        return None
    return dict(env) if isinstance(env, Mapping) else [dict(e) for e in env]


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def load_recipe(
    kind: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ClusterRecipe:
    """Merge a recipe file with command-line values; what the command line sets wins.

    Args:
        kind: ``--cluster``; None takes the file's ``kind``, else ``scheduler`` when an
            address is given, else ``local``.
        config_file: a YAML mapping of recipe options (``pipelines/slurm.yaml``).
        overrides: option values from the command line; None values are "not given".
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file) as f:
                loaded = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(f"--cluster-config {config_file}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"--cluster-config {config_file}: not valid YAML ({e})") from e
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(f"--cluster-config {config_file}: expected a mapping of options")
        data.update(loaded or {})
    file_kind = data.get("kind")
    if kind is not None and file_kind is not None and file_kind != kind:
        raise ConfigError(
            f"--cluster {kind}: {config_file} is a recipe for kind {file_kind}; "
            "pick one or drop --cluster"
        )
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    data["kind"] = (
        kind or data.get("kind") or ("scheduler" if data.get("scheduler_address") else "local")
    )
    try:
        return ClusterRecipe.from_mapping(data)
    except ConfigError as e:
        if config_file is None:
            raise
        raise ConfigError(f"{e} (recipe {config_file})") from e


def parse_cluster_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--cluster-option KEY=VALUE`` pairs: counts, lists and mappings parse as YAML, the rest
    stays text (so ``walltime=2:00:00`` is not read as 7200 seconds).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--cluster-option {pair!r}: use KEY=VALUE, e.g. walltime=02:00:00")
        key = key.strip().replace("-", "_")
        if key not in _STRUCTURED_OPTIONS:
            out[key] = value or None
            continue
        try:
            out[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--cluster-option {pair!r}: value is not valid YAML ({e})") from e
    return out


def check_output(recipe: ClusterRecipe, url: str) -> None:
    """Pods cannot see this machine's disk: a K8s build must write to an object store."""
    if recipe.kind == "k8s" and "://" not in url:
        raise ConfigError(
            f"-o {url}: with --cluster k8s the worker pods write the store; use a remote URL "
            "such as s3://bucket/name.zarr"
        )


def local_cluster_kwargs(recipe: ClusterRecipe) -> dict[str, Any]:
    """``LocalCluster`` arguments: processes, loopback-only unless the recipe says otherwise."""
    security = recipe.dask_security()
    memory = recipe.memory_limit or "auto"
    host = recipe.host or "127.0.0.1"
    http = _http_options(recipe, host)
    return {
        "n_workers": recipe.workers,
        "threads_per_worker": recipe.threads_per_worker,
        "processes": True,
        "host": host,
        "dashboard_address": http["dashboard_address"] if http["dashboard"] else None,
        "scheduler_kwargs": http,
        "memory_limit": 0 if memory in ("none", "0") else memory,
        "security": security,
        "protocol": "tls://" if security is not None else None,
    }


def _http_options(recipe: ClusterRecipe, host: str | None) -> dict[str, Any]:
    """Scheduler HTTP options: the dashboard on loopback and a free port, if bokeh is there.

    The scheduler serves ``/health`` and metrics even without a dashboard, on port 8787 unless
    told otherwise; a disabled dashboard still gets an address, on the bind host and a free port.
    """
    addr = recipe.dashboard_address
    fallback = f"{host or '127.0.0.1'}:0"
    if addr is not None and addr.lower() in ("none", "", "off"):
        return {"dashboard": False, "dashboard_address": fallback}
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return {"dashboard": False, "dashboard_address": fallback}
    return {"dashboard": True, "dashboard_address": addr or "127.0.0.1:0"}


def slurm_kwargs(recipe: ClusterRecipe) -> dict[str, Any]:
    """``SLURMCluster`` arguments for one job of ``processes_per_job`` worker processes."""
    from dask.utils import parse_bytes

    ppj = recipe.processes_per_job or 1
    if recipe.memory_per_job is not None:
        memory = recipe.memory_per_job
    else:
        memory = f"{parse_bytes(recipe.memory_limit) * ppj}B"
    prologue = [f"export {k}={shlex.quote(v)}" for k, v in (recipe.env or {}).items()]
    prologue += list(recipe.job_script_prologue or ())
    scheduler_options: dict[str, Any] = _http_options(recipe, recipe.host)
    if recipe.host is not None:
        scheduler_options["host"] = recipe.host
    kwargs: dict[str, Any] = {
        "cores": recipe.cores_per_job or ppj * recipe.threads_per_worker,
        "processes": ppj,
        "memory": memory,
        "walltime": recipe.walltime,
        "account": recipe.account,
        "queue": recipe.queue,
        "job_extra_directives": list(recipe.job_extra_directives or ()),
        "job_script_prologue": prologue,
        "python": recipe.python,
        "interface": recipe.interface,
        "local_directory": recipe.local_directory,
        "log_directory": recipe.log_directory,
        "job_name": recipe.name or "synth-worker",
        "security": recipe.dask_security(),
        "scheduler_options": scheduler_options,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def slurm_job_script(recipe: ClusterRecipe) -> str:
    """The ``sbatch`` script one worker job runs, rendered without starting a scheduler.

    dask-jobqueue creates ``log_directory`` as soon as a job object exists; rendering points
    it at a temporary folder and writes the recipe's path back, so showing has no side effect.
    """
    import tempfile

    SLURMJob = _import("dask_jobqueue.slurm", "slurm").SLURMJob
    kwargs = slurm_kwargs(recipe)
    kwargs.pop("scheduler_options")
    scheme = "tcp"
    if kwargs.get("security") is not None:
        scheme = "tls"
        kwargs["protocol"] = "tls://"
    with tempfile.TemporaryDirectory(prefix="synth-slurm-logs-") as tmp:
        if "log_directory" in kwargs:
            kwargs["log_directory"] = tmp
        job = SLURMJob(f"{scheme}://<scheduler-address>:8786", name="dummy-name", **kwargs)
        script = job.job_script()
    return script.replace(tmp, recipe.log_directory) if recipe.log_directory else script


def slurm_cluster(recipe: ClusterRecipe) -> Any:
    """A ``SLURMCluster`` with its scheduler started here and no job submitted yet."""
    SLURMCluster = _import("dask_jobqueue", "slurm").SLURMCluster
    return SLURMCluster(**slurm_kwargs(recipe))


def k8s_cluster_spec(recipe: ClusterRecipe) -> dict[str, Any]:
    """The ``DaskCluster`` resource for the operator: ``workers`` pods of the synth image.

    The image's ENTRYPOINT is ``synth``, so containers get a full ``command`` (``dask
    scheduler`` / ``dask worker``) instead of ``args`` that would be appended to it.
    """
    make_cluster_spec = _import("dask_kubernetes.operator", "k8s").make_cluster_spec
    name = (recipe.name or "synth-{uuid}").format(uuid=os.urandom(4).hex())
    spec = make_cluster_spec(
        name=name,
        image=recipe.image,
        n_workers=recipe.workers,
        resources=dict(recipe.resources) if recipe.resources else None,
        env=_k8s_env(recipe.env),
        worker_command="dask worker",
        scheduler_service_type=recipe.scheduler_service_type or "ClusterIP",
    )
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    worker_args = ["--nthreads", str(recipe.threads_per_worker)]
    if recipe.memory_limit is not None:
        memory = "0" if recipe.memory_limit == "none" else recipe.memory_limit
        worker_args += ["--memory-limit", memory]
    worker["command"] = worker.pop("args") + worker_args
    if recipe.volumes:
        spec["spec"]["worker"]["spec"]["volumes"] = [dict(v) for v in recipe.volumes]
    if recipe.volume_mounts:
        worker["volumeMounts"] = [dict(v) for v in recipe.volume_mounts]
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    args = scheduler.pop("args")
    scheduler["command"] = ["dask", "scheduler", *args[1:]]
    return spec


def _import(module: str, kind: str) -> Any:
    """Import a backend, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"--cluster {kind}: needs {module.split('.')[0].replace('_', '-')}; "
            "pip install 'synth[cluster]'"
        ) from e


@contextlib.contextmanager
def open_client(recipe: ClusterRecipe) -> Iterator[Any]:
    """A ``distributed.Client`` on the recipe's cluster; started clusters close on exit.

    Local: worker processes with nannies (memory limits need processes), bound to 127.0.0.1.
    Scheduler: connect only; the workers belong to whoever started them. SLURM: submit
    ``recipe.jobs`` jobs; they are cancelled on exit. K8s: create a ``DaskCluster`` resource,
    deleted on exit.
    """
    from distributed import Client

    if recipe.kind == "scheduler":
        timeout = recipe.connect_timeout or "30s"
        try:
            client = Client(
                recipe.scheduler_address, security=recipe.dask_security(), timeout=timeout
            )
        except OSError as e:
            trust = " and trusts these TLS certificates" if recipe.security is not None else ""
            raise SynthError(
                f"--scheduler {recipe.scheduler_address}: cannot connect ({e}); "
                f"check that it is running{trust}"
            ) from e
        with client:
            yield client
        return
    with (
        _start_cluster(recipe) as cluster,
        Client(cluster, security=recipe.dask_security()) as client,
    ):
        yield client


def results_as_completed(client: Any, futures: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """``(key, result)`` of each task as it finishes, its future dropped once the result is here.

    A future kept after its result was read pins the result on its worker, and the scheduler
    recomputes everything a lost worker held that a future still points at, before the tasks
    still queued: a build that kept all its shard futures re-made every shard a killed worker
    had ever finished, and no new shard landed meanwhile (issue 20). Dropped at once, a lost
    worker costs only the tasks it was running. Pass the futures straight from ``client.map``
    and keep no other reference to them. Unfinished tasks are cancelled on any error, or when
    the caller stops early.
    """
    from distributed import as_completed

    pending = {f.key: f for f in futures}
    del futures
    try:
        for fut, result in as_completed(list(pending.values()), with_results=True):
            key = fut.key
            del fut, pending[key]  # the last reference: the scheduler forgets the task
            yield key, result
    except BaseException:
        client.cancel(list(pending.values()))
        raise


@contextlib.contextmanager
def _start_cluster(recipe: ClusterRecipe) -> Iterator[Any]:
    if recipe.kind == "local":
        from distributed import LocalCluster

        with LocalCluster(**local_cluster_kwargs(recipe)) as cluster:
            yield cluster
    elif recipe.kind == "slurm":
        if shutil.which("sbatch") is None:
            raise SynthError(
                "--cluster slurm: sbatch not found on PATH; run synth on a SLURM login node"
            )
        with slurm_cluster(recipe) as cluster:
            cluster.scale(jobs=recipe.jobs)
            yield cluster
    else:
        KubeCluster = _import("dask_kubernetes.operator", "k8s").KubeCluster
        try:
            cluster = KubeCluster(
                custom_cluster_spec=k8s_cluster_spec(recipe),
                namespace=recipe.namespace,
                shutdown_on_close=True,
                quiet=True,
            )
        except Exception as e:
            raise SynthError(
                f"--cluster k8s: cannot create the DaskCluster ({type(e).__name__}: {e}); "
                "is kubectl configured and the dask-kubernetes operator installed?"
            ) from e
        with cluster:
            yield cluster


class _PlainDumper(yaml.SafeDumper):
    """YAML without ``&id001`` anchors: the spec shares env/resources between pods."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_recipe(recipe: ClusterRecipe) -> str:
    """What ``synth build --show-cluster`` prints: the recipe and what the backend would run."""
    lines = [f"cluster: {recipe.describe()}"]
    if recipe.kind == "slurm":
        lines += ["job script (one per job, scheduler address filled in at submission):", ""]
        lines.append(slurm_job_script(recipe))
    elif recipe.kind == "k8s":
        lines += ["DaskCluster resource:", ""]
        text = yaml.dump(k8s_cluster_spec(recipe), Dumper=_PlainDumper, sort_keys=False)
        lines.append(text.rstrip())
    elif recipe.kind == "local":
        kw = local_cluster_kwargs(recipe)
        kw.pop("security")
        lines.append(f"LocalCluster({', '.join(f'{k}={v!r}' for k, v in kw.items())})")
    return "\n".join(lines)
