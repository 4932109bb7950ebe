"""`wasp dev`: the master and every worker of a shards file, on this machine.

The quickest way to see wasp work and the basis of the end-to-end tests: no
Kubernetes, the simulator backend unless asked otherwise, everything on
127.0.0.1. The decisions are pure (`plan`: which children, with which command,
environment and log file; `seed_accounts`: the example shared config); the
shell around them (`run`) starts each child in its own process group, reports
as each one answers `/health`, and on Ctrl-C or SIGTERM stops every group, so
nothing is left behind. A child that dies stops the run with its log's tail.

Like `wasp.cli` this is the top of the stack: it reuses the master's shards-file
model and shared-config validation rather than restating them, and renders each
worker's environment from the contract the worker reads it with
(`wasp.contract.WorkerEnv`), so a worker that would refuse its environment is
refused here, before anything starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from pydantic import ValidationError

from wasp.contract import MASTER_METRICS_PORT, Backend, WorkerEnv
from wasp.slots import SlotRange

Say = Callable[[str], None]
HOST = "127.0.0.1"
STOP_GRACE_S = 10.0
POLL_S = 0.2
TAIL_LINES = 25
# What `wasp dev` sets itself: a value left in the caller's environment must not win.
OWN_ENV = ("PORT", "PORT_MASTER", "SHARDS_JSON", "METRICS_PORT", "WORKER_TOKENS", "WORKER_INSECURE")
ACCOUNT_NAMES = ("Sales", "Support", "Billing", "Onboarding", "Partners", "Field team")


class BadShards(ValueError):
    """The shards file cannot be run: invalid, overlapping, or two shards on one port."""


@dataclass(frozen=True)
class DevOptions:
    shards_file: Path
    data_dir: Path = Path(".wasp-dev")
    backend: Backend = "simulator"
    port: int = 3000  # the master: console, API, Socket.IO
    base_port: int | None = None  # workers on base_port, base_port+1, ... (else the file's)
    # /metrics of the master on this port, of the workers on the next ones.
    metrics_base_port: int = MASTER_METRICS_PORT
    start_timeout_s: float = 60.0


@dataclass(frozen=True)
class Child:
    """One program to run: `wasp <role>` with its environment, where it answers, its log."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    url: str
    log: Path
    detail: str


@dataclass
class Running:
    child: Child
    process: subprocess.Popen[bytes]
    started: float
    ready: bool = False


@dataclass
class Plan:
    children: list[Child]
    shards: list[dict[str, object]]  # the resolved shards file the master reads
    config_dir: Path
    shards_path: Path
    token: str = field(repr=False, default="")
    metrics: dict[str, str] = field(default_factory=dict)  # child name -> its /metrics URL

    @property
    def master(self) -> Child:
        return self.children[-1]


def plan(
    options: DevOptions, base_env: Mapping[str, str], token: str, worker_token: str | None = None
) -> Plan:
    """What to start for these options: every worker of the shards file, then the master.

    `token` is what workers send the master (MASTER_TOKEN), `worker_token` what the
    master sends workers (WORKER_TOKENS; a fresh one when not given): one run, one
    pair, never asked of the user."""
    worker_token = worker_token or secrets.token_urlsafe(32)
    from wasp_master.shards import load_shards

    data_dir = options.data_dir.resolve()
    config_dir = data_dir / "config"
    logs = data_dir / "logs"
    shards_path = data_dir / "shards.json"
    python = (sys.executable, "-m", "wasp.cli")
    master_url = f"http://{HOST}:{options.port}"
    env = {k: v for k, v in base_env.items() if k not in OWN_ENV}
    try:
        shards = load_shards(None, options.shards_file)
    except ValueError as error:  # pydantic's ValidationError is one too
        raise BadShards(f"{options.shards_file}: {error}") from None
    ports = [
        s.port if options.base_port is None else options.base_port + i for i, s in enumerate(shards)
    ]
    metrics_ports = [options.metrics_base_port + i for i in range(len(shards) + 1)]
    taken = [*ports, options.port, *metrics_ports]
    if len(set(taken)) != len(taken):
        raise BadShards(
            f"ports collide: master {options.port}, workers {ports}, metrics {metrics_ports}"
        )
    children: list[Child] = []
    resolved: list[dict[str, object]] = []
    metrics: dict[str, str] = {}
    for shard, port, metrics_port in zip(shards, ports, metrics_ports[1:], strict=True):
        metrics[shard.id] = f"http://{HOST}:{metrics_port}/metrics"
        work_dir = data_dir / (shard.workdir or Path(shard.id))
        resolved.append(
            {
                **shard.model_dump(mode="json", by_alias=True),
                "port": port,
                "host": HOST,
                "workdir": str(work_dir),
            }
        )
        try:
            worker = WorkerEnv.model_validate(
                {
                    "port": port,
                    "host": HOST,
                    "slot_from": shard.slot_from,
                    "slot_to": shard.slot_to,
                    "max_active": shard.max_active,
                    "max_init": shard.max_init,
                    "warmup_limit": shard.warmup_limit,
                    "config_dir": config_dir,
                    "work_dir": work_dir,
                    "backend": options.backend,
                    "master_internal_url": master_url,
                    "master_token": token,
                    "worker_tokens": worker_token,
                    "metrics_port": metrics_port,
                    "shard_name": shard.id,
                    # One simulated WhatsApp server for all: messages cross shards.
                    "simulator_server_dir": data_dir / "simulator-server",
                }
            )
        except ValidationError as error:
            raise BadShards(f"{options.shards_file}: shard {shard.id}: {error}") from None
        children.append(
            Child(
                name=shard.id,
                argv=(*python, "worker"),
                env={**env, **worker.as_env()},
                url=f"http://{HOST}:{port}",
                log=logs / f"{shard.id}.log",
                detail=f"{shard.slot_from}..{shard.slot_to}",
            )
        )
    children.append(
        Child(
            name="master",
            argv=(
                *python,
                "master",
                "--shards-file",
                str(shards_path),
                "--config-dir",
                str(config_dir),
            ),
            env={
                **env,
                "PORT_MASTER": str(options.port),
                "METRICS_PORT": str(metrics_ports[0]),
                "HOST": HOST,
                "MASTER_TOKEN": token,
                "WORKER_TOKENS": worker_token,
            },
            url=master_url,
            log=logs / "master.log",
            detail="console, API, live events",
        )
    )
    metrics["master"] = f"http://{HOST}:{metrics_ports[0]}/metrics"
    return Plan(children, resolved, config_dir, shards_path, token, metrics)


def seed_accounts(
    ranges: list[SlotRange],
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Example accounts (the first three slots of each range) and one role bound to the
    first slot of each range, so warm-up has something to start."""
    accounts: list[dict[str, object]] = []
    roles: list[dict[str, object]] = []
    for index, slots in enumerate(ranges):
        for slot in itertools.islice(slots, 3):
            name = ACCOUNT_NAMES[len(accounts) % len(ACCOUNT_NAMES)]
            accounts.append({"slot": str(slot), "enabled": True, "ws": "default", "name": name})
        roles.append(
            {"id": f"desk-{index + 1}", "name": f"Desk {index + 1}", "boundSlot": str(slots.first)}
        )
    return accounts, roles


def prepare(layout: Plan) -> None:
    """Folders, the resolved shards file, and the shared config unless it exists already."""
    from wasp_master.shared_config import Kind, validate

    layout.config_dir.mkdir(parents=True, exist_ok=True)
    for child in layout.children:
        child.log.parent.mkdir(parents=True, exist_ok=True)
        work_dir = child.env.get("WORKDIR")
        if work_dir:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
    layout.shards_path.write_text(json.dumps(layout.shards, indent=2) + "\n")
    ranges = [SlotRange.parse(str(s["from"]), str(s["to"])) for s in layout.shards]
    accounts, roles = seed_accounts(ranges)
    seeds: list[tuple[Kind, list[dict[str, object]]]] = [("accounts", accounts), ("roles", roles)]
    for kind, items in seeds:
        path = layout.config_dir / f"{kind}.json"
        if not path.exists():
            path.write_text(json.dumps(validate(kind, items), indent=2) + "\n")


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    if not path.exists():
        return "(no output)"
    text = path.read_text(errors="replace").rstrip("\n").splitlines()
    return "\n".join(text[-lines:]) or "(no output)"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if `wasp dev` itself is killed (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):
        # HTTPException too: probing a port nobody listens on yet can connect the socket
        # to itself (TCP self-connect) and read back its own request.
        return False


class Supervisor:
    """The children of one run: start, watch, stop (each its own process group)."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.running: list[Running] = []
        self.stop_requested: str | None = None

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requested = signal.Signals(signum).name

    def start(self, child: Child) -> Running:
        out: IO[bytes]
        with child.log.open("ab") as out:
            process = subprocess.Popen(
                child.argv,
                env=child.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,  # Ctrl-C reaches `wasp dev` only; it stops the groups
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        running = Running(child, process, time.monotonic())
        self.running.append(running)
        self.say(f"  started  {child.name:<8} pid {process.pid:<7} {child.url}  {child.detail}")
        return running

    def dead(self) -> Running | None:
        return next((r for r in self.running if r.process.poll() is not None), None)

    def wait_ready(self, timeout_s: float) -> Running | None:
        """Until every child answers /health; the child that died (or is late) otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.stop_requested is None:
            gone = self.dead()
            if gone is not None:
                return gone
            for running in self.running:
                if not running.ready and _healthy(running.child.url):
                    running.ready = True
                    took = time.monotonic() - running.started
                    self.say(f"  ready    {running.child.name:<8} in {took:.1f} s")
            if all(r.ready for r in self.running):
                return None
            time.sleep(POLL_S)
        return next((r for r in self.running if not r.ready), None)

    def watch(self) -> Running | None:
        """Until a stop is requested (None) or a child exits (that child)."""
        while self.stop_requested is None:
            gone = self.dead()
            if gone is not None:
                return gone
            time.sleep(POLL_S)
        return None

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM each group, last started first, then SIGKILL what is left (grandchildren
        included). The master goes first: a worker finishes its shutdown only once the
        master's long-poll of its /events ends, so stopping both at once takes the whole poll."""
        deadline = time.monotonic() + grace_s
        for running in reversed(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGTERM)
            if running.child.name == "master":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    running.process.wait(max(0.0, deadline - time.monotonic()))
        for running in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.process.wait(max(0.0, deadline - time.monotonic()))
        for running in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.process.wait(5)


def _failure(say: Say, running: Running, what: str) -> int:
    code = running.process.poll()
    state = f"exited with code {code}" if code is not None else "is not answering"
    say(f"\nwasp dev: {running.child.name} {state} {what}; last lines of {running.child.log}:")
    say(tail(running.child.log))
    return 1


def run(options: DevOptions, say: Say | None = None) -> int:
    """Start everything, report, wait for Ctrl-C/SIGTERM, stop everything; the exit code."""
    say = say or (lambda line: print(line, flush=True))
    layout = plan(options, os.environ, secrets.token_urlsafe(24))
    prepare(layout)
    supervisor = Supervisor(say)
    previous = {
        signum: signal.signal(signum, supervisor.request_stop)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    data_dir = options.data_dir
    say(f"wasp dev: {options.backend} backend, data in {data_dir}/, logs in {data_dir}/logs/")
    try:
        for child in layout.children:
            supervisor.start(child)
        late = supervisor.wait_ready(options.start_timeout_s)
        if late is not None:
            return _failure(say, late, f"within {options.start_timeout_s:.0f} s of starting")
        if supervisor.stop_requested is not None:
            return 0
        master = layout.master.url
        workers = ", ".join(layout.metrics[c.name] for c in layout.children[:-1])
        say("")
        say(f"  Console   {master}/")
        say(f"  API       {master}/openapi.json")
        say(f"  Metrics   {layout.metrics['master']}  (workers: {workers})")
        say("")
        say("Ctrl-C stops everything.")
        gone = supervisor.watch()
        if gone is not None:
            return _failure(say, gone, "unexpectedly")
        say(
            f"\nwasp dev: {supervisor.stop_requested}: stopping {len(supervisor.running)} processes"
        )
        return 0
    finally:
        supervisor.stop_all()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if supervisor.running:
            say("wasp dev: stopped")
