"""Real processes for the Python client tests.

Starts a redis-server (a plaintext port, and a TLS port with certificates made by the openssl CLI)
and the built redis-sidecar in front of it, each on a free loopback port, and stops both at the end.
The sidecar binary comes from REDIS_SIDECAR_BINARY. With REDIS_SIDECAR_TEST_DIRECT=1 instead, the
clients talk to redis-server directly: a check of the test logic itself, never used by CTest.

When the sidecar stops, its exit status and log are checked: a crash, a non-zero exit or a sanitizer
report fails the tests.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"


def free_port():
    """A loopback TCP port that nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def probe(port, command, timeout=1.0):
    """Sends one inline command on a fresh connection; the first reply line, or None."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(command.encode() + b"\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                data += chunk
            return data.split(b"\r\n", 1)[0].decode("latin-1")
    except OSError:
        return None


def wait_for(what, check, seconds=10.0):
    """Polls `check` every 20 ms until it returns something truthy; fails after `seconds`.
    For waiting on state, never for judging speed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Child:
    """A child process whose output goes to a log file."""

    def __init__(self, name, args, log_path):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, port, command, expected):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}) before answering:\n{self.output()}")
            if probe(port, command) == expected:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {command} on {port} in 20 s:\n{self.output()}")

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s. Returns the exit status (negative: a signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def make_certificates(directory):
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sidecar-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
        "-out", "server.csr")
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")


class Stack:
    """redis-server (plaintext + TLS) and the sidecar in front of its TLS port.

    port           where clients connect (the sidecar; Redis itself in direct mode)
    upstream_port  Redis' plaintext port, for checks that go around the sidecar
    """

    def __init__(self, sidecar_args=()):
        self.direct = os.environ.get("REDIS_SIDECAR_TEST_DIRECT") == "1"
        binary = os.environ.get("REDIS_SIDECAR_BINARY")
        if not self.direct and not binary:
            raise RuntimeError("REDIS_SIDECAR_BINARY is not set: point it at the built redis-sidecar "
                               "(or set REDIS_SIDECAR_TEST_DIRECT=1 to test against Redis directly)")
        self.dir = tempfile.mkdtemp(prefix="sidecar-python-")
        self.redis = None
        self.sidecar = None
        try:
            make_certificates(self.dir)
            self.upstream_port = free_port()
            self.tls_port = free_port()
            self.start_redis()
            if self.direct:
                self.port = self.upstream_port
            else:
                self.port = free_port()
                self.sidecar = Child("redis-sidecar", [
                    binary, "--listen", f"{HOST}:{self.port}",
                    "--upstream", f"rediss://{HOST}:{self.tls_port}",
                    "--tls-ca-file", os.path.join(self.dir, "ca.crt"),
                    "--metrics-listen", f"{HOST}:0", *sidecar_args,
                ], os.path.join(self.dir, "sidecar.log"))
                self.sidecar.wait_ready(self.port, "PING", "+PONG")
        except BaseException:
            self.stop()
            raise

    def start_redis(self):
        """Starts (or restarts, on the same ports) redis-server."""
        d = self.dir
        self.redis = Child("redis-server", [
            "redis-server", "--port", str(self.upstream_port), "--bind", HOST,
            "--tls-port", str(self.tls_port), "--tls-cert-file", os.path.join(d, "server.crt"),
            "--tls-key-file", os.path.join(d, "server.key"), "--tls-ca-cert-file",
            os.path.join(d, "ca.crt"), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
            "--dir", d, "--protected-mode", "no",
        ], os.path.join(d, "redis.log"))
        self.redis.wait_ready(self.upstream_port, "PING", "+PONG")

    def stop_redis(self):
        self.redis.stop()

    def url(self, db=None):
        """redis://127.0.0.1:port[/db] for the client-facing port."""
        return f"redis://{HOST}:{self.port}" + ("" if db is None else f"/{db}")

    def sidecar_problem(self):
        """Stops the sidecar; None when it ended cleanly, else what went wrong, with its log."""
        if self.sidecar is None:
            return None
        code = self.sidecar.stop()
        out = self.sidecar.output()
        self.sidecar = None
        if re.search(r"AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer", out):
            return f"sanitizer report in the sidecar log:\n{out}"
        if code not in (0, -signal.SIGTERM):
            return f"sidecar ended with {code} after SIGTERM:\n{out}"
        return None

    def stop(self):
        """Stops the sidecar, then Redis; raises if the sidecar did not end cleanly."""
        problem = self.sidecar_problem()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        shutil.rmtree(self.dir, ignore_errors=True)
        if problem:
            raise AssertionError(problem)
