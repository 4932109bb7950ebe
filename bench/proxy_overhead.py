"""What the master's proxy costs: the same request straight to a worker, through
the master, and through nginx, side by side in one run.

One simulator `wasp worker`, one `wasp master` in local mode routing to it, and
one nginx (a single worker process, HTTP/1.1 keep-alive upstream) in front of
the same worker; all three stay up for the whole run, so background work (the
master's event long-poll, health probes) is the same for every target. Load
comes from wrk in its own process (closed loop, fixed connections) and from
vegeta (open loop: a fixed rate whatever the answers take, so latency is not
queueing behind the load generator's own connections). After a warm-up, rounds
take the targets in turn (rotated each round) so the noise of a shared 2-core
machine falls on all of them alike. Figures are medians over the rounds.

CPU cost is read from /proc around every closed-loop run: the seconds of CPU
the front process (the master; nginx's master and worker processes) spent,
per 1,000 requests it forwarded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stack import start_pair
from tests.support.cluster import tools_bin_dir
from tests.support.processes import ProgramProcess, free_port, http_ok
from tests.support.worker import CREDENTIAL, WORKER_TOKEN
from wasp.contract import WORKER_TOKEN_HEADER

ROUNDS = 5
TARGETS = ("direct", "master", "nginx")
WARMUP_S = 1
SEND_BODY = {"to": "5511999999999", "text": "hello", "idempotency_key": "bench-send"}


@dataclass(frozen=True)
class Scenario:
    """One request shape at one concurrency; wrk repeats it for `seconds`."""

    name: str
    method: str
    path: str
    connections: int
    seconds: int
    body: dict[str, str] | None = None
    rate: int | None = None  # open loop (vegeta): requests per second; `connections` unused


OPEN_RATES = (500, 2000)
SCENARIOS = (
    Scenario("status", "GET", "/api/accounts/A1/status", 32, 4),
    # A repeated idempotency key: after the first, the worker answers from its
    # queue (one SELECT, 200) and the disk does not grow.
    Scenario("send", "POST", "/api/accounts/A1/send", 32, 3, SEND_BODY),
    # Under every target's capacity: what the proxy adds, not what queues. A CRM
    # with 350 accounts peaks in the low hundreds of requests per second.
    *(
        Scenario(f"status_open_{rate}", "GET", "/api/accounts/A1/status", 0, 4, rate=rate)
        for rate in OPEN_RATES
    ),
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# wrk's end-of-run hook: one JSON line (latencies in microseconds).
REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream worker {{
    server 127.0.0.1:{worker};
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://worker;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header {header} {token};
    }}
  }}
}}
"""


def lua_script(scenario: Scenario) -> str:
    # The worker answers only the master's token: a baseline straight to it sends it too.
    credential = f'wrk.headers["{WORKER_TOKEN_HEADER}"] = "{WORKER_TOKEN}"\n'
    if scenario.body is None:
        return credential + REPORT_LUA
    request = (
        f'wrk.method = "{scenario.method}"\n'
        f"wrk.body = '{json.dumps(scenario.body)}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return credential + request + REPORT_LUA


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_version() -> str:
    """`nginx/1.22.1`, from `nginx -v` (which prints on stderr)."""
    out = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=True)
    return out.stderr.strip().rpartition(" ")[2]


class Nginx:
    """nginx in the foreground with a generated config, in its own process group."""

    def __init__(self, tmp: Path, port: int, worker_port: int) -> None:
        self.tmp = tmp
        self.port = port
        tmp.mkdir(parents=True, exist_ok=True)
        conf = NGINX_CONF.format(
            tmp=tmp, port=port, worker=worker_port, header=WORKER_TOKEN_HEADER, token=WORKER_TOKEN
        )
        (tmp / "nginx.conf").write_text(conf)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        binary = nginx_binary()
        with (self.tmp / "nginx.out").open("ab") as out:
            self.process = subprocess.Popen(
                [binary, "-p", str(self.tmp), "-c", str(self.tmp / "nginx.conf"), "-e", "stderr"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while not http_ok(f"http://127.0.0.1:{self.port}/health"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.tmp / "nginx.out").read_text(errors="replace")
                raise RuntimeError(f"nginx did not start:\n{log[-2000:]}")
            time.sleep(0.1)
        return self

    def pids(self) -> list[int]:
        """nginx's master process and its worker (same process group)."""
        assert self.process is not None
        group = os.getpgid(self.process.pid)
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == group:
                        found.append(int(entry.name))
                except ProcessLookupError:
                    continue
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def wrk(url: str, scenario: Scenario, script: Path, seconds: int) -> dict[str, Any]:
    """One closed-loop wrk run; its JSON report. A run with any error is refused."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{scenario.connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url + scenario.path,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if report["errors"]:
        raise RuntimeError(f"wrk saw {report['errors']} errors on {url}{scenario.path}:\n{out}")
    return report


def vegeta(url: str, scenario: Scenario, seconds: int) -> dict[str, Any]:
    """One open-loop vegeta run, reported like `wrk`'s. A run with any failure is refused."""
    binary = tools_bin_dir(build=False) / "vegeta"  # `make bench` builds it
    attack = subprocess.run(
        [
            str(binary),
            "attack",
            f"-rate={scenario.rate}/s",
            f"-duration={seconds}s",
            "-timeout=5s",
            "-keepalive=true",
            # What the master adds; a direct call needs it too (through the master and
            # nginx it is replaced or set again).
            f"-header={WORKER_TOKEN_HEADER}: {WORKER_TOKEN}",
        ],
        input=f"{scenario.method} {url}{scenario.path}\n".encode(),
        capture_output=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    report = json.loads(
        subprocess.run(
            [str(binary), "report", "-type=json"], input=attack, capture_output=True, check=True
        ).stdout
    )
    if report["success"] < 1:
        raise RuntimeError(f"vegeta saw failures on {url}{scenario.path}: {report['errors']}")
    latencies = report["latencies"]
    return {
        "requests": report["requests"],
        "duration_us": report["duration"] / 1000,
        "p50_us": latencies["50th"] / 1000,
        "p99_us": latencies["99th"] / 1000,
        "errors": 0,
    }


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU the processes have used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def load(
    url: str, scenario: Scenario, script: Path, seconds: int, front: list[int]
) -> dict[str, Any]:
    """One run; a closed-loop run also reports the front processes' CPU per 1,000 requests."""
    if scenario.rate is not None:
        return vegeta(url, scenario, seconds)
    before = cpu_seconds(front)
    report = wrk(url, scenario, script, seconds)
    if front:
        report["cpu_s_per_1000"] = (cpu_seconds(front) - before) / report["requests"] * 1000
    return report


def post(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **CREDENTIAL},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    rps = [r["requests"] / (r["duration_us"] / 1e6) for r in runs]
    summary = {
        "rps": round(statistics.median(rps)),
        "p50_ms": round(statistics.median(r["p50_us"] for r in runs) / 1000, 2),
        "p99_ms": round(statistics.median(r["p99_us"] for r in runs) / 1000, 3),
    }
    if all("cpu_s_per_1000" in r for r in runs):
        summary["cpu_s_per_1000"] = round(statistics.median(r["cpu_s_per_1000"] for r in runs), 3)
    return summary


def measure(
    urls: dict[str, str], fronts: dict[str, list[int]], tmp: Path
) -> dict[str, dict[str, dict[str, float]]]:
    """Warm every target, then ROUNDS rounds of every scenario on every target."""
    scripts = {}
    for scenario in SCENARIOS:
        scripts[scenario.name] = tmp / f"{scenario.name}.lua"
        scripts[scenario.name].write_text(lua_script(scenario))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.name: {t: [] for t in TARGETS} for s in SCENARIOS
    }
    for scenario in SCENARIOS:
        for target in TARGETS:
            load(urls[target], scenario, scripts[scenario.name], WARMUP_S, [])
    for round_no in range(ROUNDS):
        order = TARGETS[round_no % len(TARGETS) :] + TARGETS[: round_no % len(TARGETS)]
        for scenario in SCENARIOS:
            for target in order:
                report = load(
                    urls[target],
                    scenario,
                    scripts[scenario.name],
                    scenario.seconds,
                    fronts[target],
                )
                runs[scenario.name][target].append(report)
    return {
        name: {target: summarize(reports) for target, reports in by_target.items()}
        for name, by_target in runs.items()
    }


def run() -> dict[str, Any]:
    if shutil.which("wrk") is None or not Path(nginx_binary()).exists():
        raise RuntimeError("wrk or nginx is missing: `make bench` installs them (Debian packages)")
    if not (tools_bin_dir(build=False) / "vegeta").exists():
        raise RuntimeError("vegeta is missing: `make bench` builds it (hack/tools.sh --bench)")
    with tempfile.TemporaryDirectory(prefix="wasp-bench-proxy-", dir=Path.cwd() / ".cache") as t:
        tmp = Path(t)
        nginx_port = free_port()
        programs: list[ProgramProcess] = []
        nginx: Nginx | None = None
        try:
            worker_port, master_port = start_pair(tmp, programs)
            nginx = Nginx(tmp / "nginx", nginx_port, worker_port).start()
            direct = f"http://127.0.0.1:{worker_port}"
            post(f"{direct}/api/accounts/A1/connect")
            if post(f"{direct}/api/accounts/A1/scan")["status"] != "CONNECTED":
                raise RuntimeError("A1 did not connect on the simulator")
            urls = {
                "direct": direct,
                "master": f"http://127.0.0.1:{master_port}",
                "nginx": f"http://127.0.0.1:{nginx_port}",
            }
            fronts = {"direct": [], "master": [programs[-1].pid], "nginx": nginx.pids()}
            results = measure(urls, fronts, tmp)
        finally:
            if nginx is not None:
                nginx.stop()
            for program in reversed(programs):
                program.stop()
    status = results["status"]
    open_loop = {}
    for rate in OPEN_RATES:
        got = results[f"status_open_{rate}"]
        open_loop[str(rate)] = {
            "added_p50_ms": round(got["master"]["p50_ms"] - got["direct"]["p50_ms"], 3),
            "added_p99_ms": round(got["master"]["p99_ms"] - got["direct"]["p99_ms"], 3),
            "nginx_added_p50_ms": round(got["nginx"]["p50_ms"] - got["direct"]["p50_ms"], 3),
            "nginx_added_p99_ms": round(got["nginx"]["p99_ms"] - got["direct"]["p99_ms"], 3),
        }
    return {
        "rounds": ROUNDS,
        "nginx_version": nginx_version(),
        "scenarios": [
            {
                "name": s.name,
                "request": f"{s.method} {s.path}",
                "connections": s.connections,
                "rate": s.rate,
                "seconds": s.seconds,
            }
            for s in SCENARIOS
        ],
        "results": results,
        "master_to_nginx_rps": round(status["master"]["rps"] / status["nginx"]["rps"], 2),
        "master_cpu_s_per_1000": status["master"]["cpu_s_per_1000"],
        "nginx_cpu_s_per_1000": status["nginx"]["cpu_s_per_1000"],
        "open_loop": open_loop,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
