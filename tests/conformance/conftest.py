"""Fixtures for the conformance tests: a real `triage serve` in front of a real
`triage mock-upstream`, both started from the built binary on free loopback ports.

The binary is `$TRIAGE_BIN`, or `target/debug/triage` under the repository root; a relative
`TRIAGE_BIN` is taken relative to the repository root too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUTER_KEY = "sk-triage-test"
UPSTREAM_KEY = "upstream-secret"
STARTUP_TIMEOUT_S = 20.0
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")

# Everything here talks to loopback: never through a proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Prices of the two test models, US$ per million tokens.
SMALL_PRICES = {"input": 0.15, "output": 0.6, "cached_input": 0.075}
BIG_PRICES = {"input": 2.5, "output": 10.0}

CONFIG_TEMPLATE = """\
listen = "127.0.0.1:{router_port}"

[auth]
keys = ["{router_key}"]

[dispatch]
max_retries = 1
backoff_base_ms = 1
backoff_max_ms = 5
max_retry_after_ms = 100
# High enough that no test opens a circuit, so the tests do not depend on their order.
breaker_failures = 1000
breaker_cooldown_ms = 1

[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key_env = "MOCK_UPSTREAM_KEY"
connect_timeout_ms = 2000
first_byte_timeout_ms = 10000
total_timeout_ms = 30000

[[models]]
id = "mock/small"
provider = "mock"
upstream = "small-model"
input_per_mtok = {small_input}
output_per_mtok = {small_output}
cached_input_per_mtok = {small_cached}
context = 128000
max_output = 4096
tools = true
fallbacks = ["mock/big"]
price_date = "2025-01-01"
price_source = "conformance test"

[[models]]
id = "mock/big"
provider = "mock"
upstream = "big-model"
input_per_mtok = {big_input}
output_per_mtok = {big_output}
context = 200000
tools = true

# The same mock, spoken to natively as Anthropic and as Gemini (test_anthropic_sdk.py).
[[providers]]
name = "mock-anthropic"
kind = "anthropic"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key_env = "MOCK_UPSTREAM_KEY"
connect_timeout_ms = 2000
first_byte_timeout_ms = 10000
total_timeout_ms = 30000

[[providers]]
name = "mock-gemini"
kind = "gemini"
base_url = "http://127.0.0.1:{mock_port}/v1beta"
api_key_env = "MOCK_UPSTREAM_KEY"
connect_timeout_ms = 2000
first_byte_timeout_ms = 10000
total_timeout_ms = 30000

[[models]]
id = "mock/claude"
provider = "mock-anthropic"
upstream = "claude-model"
input_per_mtok = 3.0
output_per_mtok = 15.0
cached_input_per_mtok = 0.3
cache_write_per_mtok = 3.75
context = 200000
max_output = 8192
tools = true
fallbacks = ["mock/big"]

[[models]]
id = "mock/gemini"
provider = "mock-gemini"
upstream = "gemini-model"
input_per_mtok = 0.5
output_per_mtok = 3.0
context = 1000000
tools = true
"""


def triage_binary() -> Path:
    given = os.environ.get("TRIAGE_BIN", "target/debug/triage")
    path = Path(given)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        pytest.exit(
            f"triage binary not found at {path}: run `cargo build` first or set TRIAGE_BIN",
            returncode=2,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclasses.dataclass
class Triage:
    """The running pair of processes."""

    router_url: str
    mock_url: str
    router_log: Path
    mock_log: Path

    @property
    def base_url(self) -> str:
        return f"{self.router_url}/v1"

    def client(self, api_key: str = ROUTER_KEY, **kwargs) -> openai.OpenAI:
        # No SDK retries: each test sees exactly what the router answered.
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 30.0)
        kwargs.setdefault("http_client", openai.DefaultHttpxClient(trust_env=False))
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, **kwargs)

    def mock_script(self, model: str, steps: list[dict]) -> None:
        """Queues faults on the mock upstream for `model` (an upstream name)."""
        body = json.dumps({"model": model, "steps": steps}).encode()
        request = urllib.request.Request(
            f"{self.mock_url}/_mock/script",
            data=body,
            headers={"content-type": "application/json"},
            method="POST",
        )
        with _direct.open(request, timeout=5) as response:
            assert response.status == 204, response.status

    def mock_requests(self) -> list[dict]:
        """Every chat request the mock upstream received, in order."""
        with _direct.open(f"{self.mock_url}/_mock/requests", timeout=5) as response:
            return json.loads(response.read())


def wait_until_up(url: str, processes: list[tuple[str, subprocess.Popen, Path]]) -> None:
    """Polls `url` until it answers 200; fails early if a process exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for name, process, log in processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with status {process.returncode} during start-up:\n"
                    f"{log_tail(log)}"
                )
        try:
            with _direct.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as err:
            last_error = err
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {STARTUP_TIMEOUT_S:.0f} s: {last_error}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def launch(workdir: Path, auth_extra: str = ""):
    """Starts `triage mock-upstream` and `triage serve` (CONFIG_TEMPLATE, with `auth_extra`
    lines added to its `[auth]` table) in `workdir`; yields the running pair."""
    binary = triage_binary()
    env = dict(os.environ)
    env.pop("TRIAGE_KEYS", None)  # only the config's key may be accepted
    for var in PROXY_VARS:  # the router must reach the mock directly
        env.pop(var, None)
    env["MOCK_UPSTREAM_KEY"] = UPSTREAM_KEY
    env.setdefault("RUST_LOG", "info")

    processes: list[tuple[str, subprocess.Popen, Path]] = []
    log_files = []

    def start(name: str, args: list[str], log: Path) -> subprocess.Popen:
        handle = open(log, "wb")
        log_files.append(handle)
        process = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
        processes.append((name, process, log))
        return process

    try:
        # A port picked free can be taken before the child binds it: try a few times.
        for attempt in range(3):
            mock_port, router_port = free_port(), free_port()
            while router_port == mock_port:
                router_port = free_port()
            config = workdir / "triage.toml"
            text = CONFIG_TEMPLATE.format(
                router_port=router_port,
                router_key=ROUTER_KEY,
                mock_port=mock_port,
                small_input=SMALL_PRICES["input"],
                small_output=SMALL_PRICES["output"],
                small_cached=SMALL_PRICES["cached_input"],
                big_input=BIG_PRICES["input"],
                big_output=BIG_PRICES["output"],
            )
            auth_line = f'keys = ["{ROUTER_KEY}"]\n'
            config.write_text(text.replace(auth_line, auth_line + auth_extra, 1))
            mock_log = workdir / f"mock-upstream-{attempt}.log"
            router_log = workdir / f"router-{attempt}.log"
            started = len(processes)
            start(
                "triage mock-upstream",
                ["mock-upstream", "--listen", f"127.0.0.1:{mock_port}", "--api-key", UPSTREAM_KEY],
                mock_log,
            )
            start("triage serve", ["serve", "--config", str(config)], router_log)
            mock_url = f"http://127.0.0.1:{mock_port}"
            router_url = f"http://127.0.0.1:{router_port}"
            try:
                wait_until_up(f"{mock_url}/_mock/requests", processes[started:])
                wait_until_up(f"{router_url}/health", processes[started:])
                break
            except RuntimeError:
                for _, process, _ in processes[started:]:
                    stop(process)
                if attempt == 2:
                    raise
        yield Triage(
            router_url=router_url,
            mock_url=mock_url,
            router_log=router_log,
            mock_log=mock_log,
        )
    finally:
        for _, process, _ in processes:
            stop(process)
        for handle in log_files:
            handle.close()


@pytest.fixture(scope="session")
def triage(tmp_path_factory: pytest.TempPathFactory):
    with launch(tmp_path_factory.mktemp("triage")) as running:
        yield running


@pytest.fixture
def client(triage: Triage) -> openai.OpenAI:
    with triage.client() as c:
        yield c
