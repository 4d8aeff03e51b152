"""The real `wyoming-gsv` server as a separate process (python -m wyoming_gsv), for the tests that
need what only a process has: signals, exit codes, the log, a port another process holds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 180.0  # seconds: importing torch on a loaded 2-core machine, then the warm-up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, timeout: float = START_TIMEOUT) -> float:
        """Seconds until `text` shows in the log; fails (with the log) on timeout or exit."""
        started = time.monotonic()
        while text not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"server exited ({self.process.returncode}) before {text!r}:\n{self.log()}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{text!r} not in the log after {timeout} s:\n{self.log()}")
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> tuple[int, float]:
        """Send `signum`; (exit code, seconds until the process was gone)."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server still running {timeout} s after {signum}:\n{self.log()}") from None
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def server_env(**extra: str) -> dict[str, str]:
    """This checkout's package first on the path; the suite's offline settings, then `extra`."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def launch(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "wyoming_gsv", *argv], stdout=log, stderr=subprocess.STDOUT,
            env=env or server_env(), start_new_session=True,
        )
    finally:
        log.close()


def start_server(
    data_dir: Path, *extra: str, log_path: Path, env: dict[str, str] | None = None, wait: bool = True
) -> ServerProcess:
    """Serve `data_dir` on a free loopback port (one torch thread); waits until it listens."""
    port = free_port()
    argv = ["--uri", f"tcp://127.0.0.1:{port}", "--data-dir", str(data_dir), "--threads", "1", *extra]
    server = ServerProcess(launch(argv, log_path, env), port, log_path)
    if wait:
        try:
            server.wait_for_log("Ready: listening")
        except BaseException:
            server.kill()
            raise
    return server


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
