"""A real Kubernetes control plane on loopback, for tests and for `make cluster-up`.

It runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
(fake nodes: pods get scheduled and report Running without a container
runtime), plus a small volume provisioner (`tests.support.provisioner`) so that
PersistentVolumeClaims bind. Everything listens on 127.0.0.1 only, on free
ports chosen at start, so several clones can each run their own cluster.

State lives in one directory (by default `.cache/cluster/` in the clone):
`kubeconfig`, `pki/`, `etcd/`, `logs/` and `state.json` (pids and ports).
The binaries come from `hack/tools.sh`, which builds them once per machine.

    python -m tests.support.cluster up|down|status
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = ROOT / ".cache" / "cluster"
BOOTSTRAP_MANIFEST = Path(__file__).with_name("bootstrap.yaml")
SERVICE_CIDR = "10.96.0.0/16"
START_TIMEOUT_S = 60.0


class ClusterError(RuntimeError):
    """The control plane did not start or stop as asked; the message says where to look."""


def tools_bin_dir(build: bool = True) -> Path:
    """The directory with kube-apiserver, etcd, kwok, kubectl, helm, kubeconform."""
    args = [str(ROOT / "hack" / "tools.sh")] + ([] if build else ["--path"])
    # Build progress goes to stderr (the terminal); the last stdout line is the path.
    out = subprocess.run(args, check=True, text=True, stdout=subprocess.PIPE)
    return Path(out.stdout.strip().splitlines()[-1])


def libfaketime() -> Path | None:
    """libfaketime (Debian `faketime`): runs a process with a skewed wall clock; None if absent."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ClusterState:
    """What `up` started: enough for `down` to stop exactly that and nothing else."""

    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    ready_after_s: float = 0.0

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2))


class LocalCluster:
    """Start, check and stop one loopback control plane living in `state_dir`."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, bin_dir: Path | None = None) -> None:
        self.state_dir = state_dir
        self._bin_dir = bin_dir
        self.kubeconfig = state_dir / "kubeconfig"
        self.pki = state_dir / "pki"
        self.logs = state_dir / "logs"
        self._state_file = state_dir / "state.json"

    # -- public surface ----------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = tools_bin_dir()
        return self._bin_dir

    @property
    def state(self) -> ClusterState | None:
        return ClusterState.load(self._state_file)

    @property
    def server(self) -> str:
        state = self.state
        if state is None:
            raise ClusterError(f"no cluster is running in {self.state_dir}")
        return f"https://127.0.0.1:{state.ports['apiserver']}"

    def env(self) -> dict[str, str]:
        """Environment for kubectl, helm and the programs under test."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run_kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = self.run_kubectl(*args, input=input)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def is_up(self) -> bool:
        state = self.state
        if state is None or not all(_alive(pid) for pid in state.pids.values()):
            return False
        return self._readyz(state.ports["apiserver"])

    def up(self) -> float:
        """Start everything (unless already up); return seconds until usable."""
        if self.is_up():
            return 0.0
        self.down()
        started = time.monotonic()
        bins = self.bin_dir
        for directory in (self.state_dir, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        token = self._ensure_pki()
        state = ClusterState(
            ports={
                name: free_port()
                for name in (
                    "etcd",
                    "etcd_peer",
                    "apiserver",
                    "controller_manager",
                    "scheduler",
                    "kwok",
                )
            },
            started_at=time.time(),
        )
        state.save(self._state_file)  # so that `down` can clean up a half-started cluster
        try:
            self._start_etcd(bins, state)
            self._start_apiserver(bins, state)
            self._write_kubeconfig(state.ports["apiserver"], token)
            self._start_controllers(bins, state)
            self._start_support(bins, state)
            self.kubectl("apply", "--server-side", "-f", str(BOOTSTRAP_MANIFEST))
            self._wait_for_ready_node(state)
        except BaseException:
            self.down()
            raise
        state.ready_after_s = round(time.monotonic() - started, 2)
        state.save(self._state_file)
        return state.ready_after_s

    def down(self) -> None:
        """Stop every process this cluster started and wipe its etcd data."""
        state = self.state
        if state is not None:
            # Reverse start order: support processes first, etcd last.
            for name, pid in reversed(list(state.pids.items())):
                _stop(pid, name)
            self._state_file.unlink()
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)

    def stop_apiserver(self) -> None:
        """Kill kube-apiserver alone (etcd keeps every object): an outage, for tests."""
        state = self.state
        if state is None or "apiserver" not in state.pids:
            raise ClusterError(f"no kube-apiserver is running in {self.state_dir}")
        pid = state.pids.pop("apiserver")
        os.killpg(pid, signal.SIGKILL)  # a crash: no graceful shutdown to wait for
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        state.save(self._state_file)

    def start_apiserver(self) -> None:
        """Start kube-apiserver again, on its port and the same etcd; wait until ready."""
        state = self.state
        if state is None:
            raise ClusterError(f"no cluster is running in {self.state_dir}")
        if "apiserver" not in state.pids:
            self._start_apiserver(self.bin_dir, state)

    # -- pieces ------------------------------------------------------------

    def _ensure_pki(self) -> str:
        """CA, apiserver serving cert, service-account keys, admin token (kept across restarts)."""
        self.pki.mkdir(parents=True, exist_ok=True)
        token_file = self.pki / "tokens.csv"
        if not token_file.exists():
            pki = self.pki
            # Backdated by two days when libfaketime is there: a process under test whose
            # clock runs behind must still find the certificates valid.
            lib = libfaketime()
            env = {**os.environ, **({"LD_PRELOAD": str(lib), "FAKETIME": "-2d"} if lib else {})}

            def openssl(*args: str) -> None:
                subprocess.run(["openssl", *args], check=True, capture_output=True, env=env)

            openssl(
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=wasp-local-ca",
                "-keyout",
                f"{pki}/ca.key",
                "-out",
                f"{pki}/ca.crt",
            )
            openssl(
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=kube-apiserver",
                "-keyout",
                f"{pki}/apiserver.key",
                "-out",
                f"{pki}/apiserver.csr",
            )
            sans = (
                "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default,DNS:kubernetes.default.svc"
            )
            (pki / "apiserver.ext").write_text(sans + "\n")
            openssl(
                "x509",
                "-req",
                "-in",
                f"{pki}/apiserver.csr",
                "-CA",
                f"{pki}/ca.crt",
                "-CAkey",
                f"{pki}/ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                f"{pki}/apiserver.ext",
                "-out",
                f"{pki}/apiserver.crt",
            )
            openssl("genrsa", "-out", f"{pki}/sa.key", "2048")
            openssl("rsa", "-in", f"{pki}/sa.key", "-pubout", "-out", f"{pki}/sa.pub")
            token_file.write_text(
                f'{secrets.token_hex(24)},wasp-admin,wasp-admin,"system:masters"\n'
            )
            token_file.chmod(0o600)
        return token_file.read_text().split(",", 1)[0]

    def issue_certificate(self, directory: Path, name: str, ip: str = "127.0.0.1") -> Path:
        """A serving certificate for `ip`, signed by this cluster's CA (for webhooks)."""
        directory.mkdir(parents=True, exist_ok=True)
        key, csr, crt, ext = (directory / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
        ext.write_text(f"subjectAltName=IP:{ip},DNS:localhost\n")
        run = functools.partial(subprocess.run, check=True, capture_output=True)
        run(
            [
                "openssl",
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                f"/CN={name}",
                "-keyout",
                str(key),
                "-out",
                str(csr),
            ]
        )
        run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(self.pki / "ca.crt"),
                "-CAkey",
                str(self.pki / "ca.key"),
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                str(ext),
                "-out",
                str(crt),
            ]
        )
        return directory

    def _spawn(self, state: ClusterState, name: str, argv: Sequence[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
        log.close()
        state.pids[name] = process.pid
        state.save(self._state_file)

    def _start_etcd(self, bins: Path, state: ClusterState) -> None:
        client = f"http://127.0.0.1:{state.ports['etcd']}"
        peer = f"http://127.0.0.1:{state.ports['etcd_peer']}"
        self._spawn(
            state,
            "etcd",
            [
                str(bins / "etcd"),
                "--name=wasp",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=wasp={peer}",
                # Test data is thrown away with the cluster: skip fsync for speed.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        _wait(lambda: http_ok(f"{client}/health"), "etcd", self.logs / "etcd.log", state)

    def _start_apiserver(self, bins: Path, state: ClusterState) -> None:
        pki = self.pki
        self._spawn(
            state,
            "apiserver",
            [
                str(bins / "kube-apiserver"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={state.ports['apiserver']}",
                f"--etcd-servers=http://127.0.0.1:{state.ports['etcd']}",
                f"--tls-cert-file={pki}/apiserver.crt",
                f"--tls-private-key-file={pki}/apiserver.key",
                f"--client-ca-file={pki}/ca.crt",
                f"--token-auth-file={pki}/tokens.csv",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki}/sa.pub",
                f"--service-account-signing-key-file={pki}/sa.key",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cert-dir={pki}/generated",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        port = state.ports["apiserver"]
        _wait(lambda: self._readyz(port), "kube-apiserver", self.logs / "apiserver.log", state)

    def _write_kubeconfig(self, port: int, token: str) -> None:
        import base64

        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "wasp-local",
            "clusters": [
                {
                    "name": "wasp-local",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": ca,
                    },
                }
            ],
            "users": [{"name": "wasp-admin", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "wasp-local",
                    "context": {
                        "cluster": "wasp-local",
                        "user": "wasp-admin",
                        "namespace": "default",
                    },
                }
            ],
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def _start_controllers(self, bins: Path, state: ClusterState) -> None:
        kubeconfig = str(self.kubeconfig)
        self._spawn(
            state,
            "controller_manager",
            [
                str(bins / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={state.ports['controller_manager']}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={self.pki}/sa.key",
                f"--root-ca-file={self.pki}/ca.crt",
                f"--cert-dir={self.pki}/generated-cm",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Fast feedback in tests: controllers resync and evict quickly.
                "--node-monitor-grace-period=40s",
            ],
        )
        self._spawn(
            state,
            "scheduler",
            [
                str(bins / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={state.ports['scheduler']}",
                "--leader-elect=false",
                f"--cert-dir={self.pki}/generated-sched",
            ],
        )

    def _start_support(self, bins: Path, state: ClusterState) -> None:
        stages = sorted((bins / "kwok").resolve().parent.glob("stages/*.yaml"))
        if not stages:
            raise ClusterError(f"no kwok stages next to {bins / 'kwok'}: rerun hack/tools.sh")
        self._spawn(
            state,
            "kwok",
            [
                str(bins / "kwok"),
                *(f"--config={stage}" for stage in stages),
                "--node-lease-duration-seconds=40",
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{state.ports['kwok']}",
                "--cidr=10.244.0.0/16",
                "--node-ip=127.0.0.1",
            ],
        )
        self._spawn(
            state,
            "provisioner",
            [
                sys.executable,
                "-m",
                "tests.support.provisioner",
                f"--kubeconfig={self.kubeconfig}",
            ],
        )

    def _wait_for_ready_node(self, state: ClusterState) -> None:
        def ready() -> bool:
            out = self.kubectl("get", "nodes", "-o", "json", check=False)
            nodes = json.loads(out)["items"] if out else []
            return any(
                cond["type"] == "Ready" and cond["status"] == "True"
                for node in nodes
                for cond in node.get("status", {}).get("conditions", [])
            )

        _wait(ready, "kwok node", self.logs / "kwok.log", state)

    def _readyz(self, port: int) -> bool:
        token_file = self.pki / "tokens.csv"
        if not token_file.exists():
            return False
        token = token_file.read_text().split(",", 1)[0]
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/readyz", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait(
    check: Callable[[], bool],
    what: str,
    log: Path,
    state: ClusterState,
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Poll `check` until true; fail early, with the log's tail, if a started process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        dead = [name for name, pid in state.pids.items() if not _alive(pid)]
        if dead:
            raise ClusterError(
                f"{', '.join(dead)} exited while waiting for {what}; "
                f"see {log.parent}/{dead[0]}.log:\n{_tail(log.parent / (dead[0] + '.log'))}"
            )
        time.sleep(0.2)
    raise ClusterError(
        f"{what} not ready after {timeout:.0f} s; last lines of {log}:\n{_tail(log)}"
    )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours is not alive; reap it if it is our child.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and stat.read_text().split(") ", 1)[-1][:1] != "Z"


def _stop(pid: int, name: str, grace_s: float = 10.0) -> None:
    """SIGTERM the process group `up` started, SIGKILL it after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)
    if _alive(pid):
        raise ClusterError(f"{name} (pid {pid}) survived SIGKILL")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.state_dir)
    if args.action == "up":
        seconds = cluster.up()
        how = "already running" if seconds == 0 else f"ready in {seconds:.1f} s"
        print(f"cluster {how}: {cluster.server}")
        print(f"export KUBECONFIG={cluster.kubeconfig} PATH={cluster.bin_dir}:$PATH")
    elif args.action == "down":
        cluster.down()
        print("cluster stopped")
    else:
        up = cluster.is_up()
        print(f"cluster {'up: ' + cluster.server if up else 'down'}")
        return 0 if up else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
