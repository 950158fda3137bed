"""litewitness (filippo.io/torchwood, built by deploy/local/tools.sh) run as an independent C2SP tlog-witness on
loopback: its own Ed25519 key held by its own ssh-agent, its own SQLite state, logs added with witnessctl; and a
cosigner in process, for cosignatures by keys no witness holds."""

import base64
import json
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit_schemas.checkpoint import key_hash, split_note
from audit_schemas.cosignature import ALG_COSIGNATURE_V1, cosigned_message
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
_VKEY = re.compile(r'msg="verifier key" vkey=(\S+)')


def tools() -> Path:
    """The folder holding litewitness and witnessctl (built once per machine)."""
    out = subprocess.run(
        ["bash", str(ROOT / "deploy/local/tools.sh"), "litewitness"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


class Litewitness:
    """One witness process; `stop()` and `start()` keep its key and state (a witness that went away and came back)."""

    def __init__(self, bin_dir: Path, home: Path, name: str) -> None:
        self.bin_dir, self.home, self.name = bin_dir, home, name
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = home / "witness.db"
        key = home / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
        self.fingerprint = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key) + ".pub"], check=True, capture_output=True, text=True
        ).stdout.split()[1]
        self.sock = home / "agent.sock"
        self._agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(self.sock)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.sock.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("ssh-agent did not start")
            time.sleep(0.05)
        subprocess.run(
            ["ssh-add", "-q", str(key)], check=True, env={"SSH_AUTH_SOCK": str(self.sock)}, capture_output=True
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._out: Any = None
        self.vkey = ""
        self.start()

    def start(self) -> None:
        log = self.home / "litewitness.log"
        out = self._out = log.open("ab")
        # Go's net/http reads the listen address as given: loopback only.
        self._process = subprocess.Popen(
            [
                str(self.bin_dir / "litewitness"),
                "-db", str(self.db), "-name", self.name, "-key", self.fingerprint,
                "-ssh-agent", str(self.sock), "-listen", f"127.0.0.1:{self.port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            found = _VKEY.findall(text)
            if found and "listening" in text.rsplit("verifier key", 1)[-1]:
                self.vkey = found[-1]
                return
            if self._process.poll() is not None:
                raise RuntimeError(f"litewitness exited: {text[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("litewitness did not start listening")

    @property
    def pid(self) -> int:
        """The running litewitness process's pid."""
        if self._process is None:
            raise RuntimeError("litewitness is not running")
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def add_log(self, origin: str, verifier_key: str) -> None:
        """Trust `verifier_key` (named as the origin) for `origin`, starting at size 0."""
        ctl = str(self.bin_dir / "witnessctl")
        subprocess.run([ctl, "add-log", "-db", str(self.db), "-origin", origin], check=True, capture_output=True)
        subprocess.run(
            [ctl, "add-key", "-db", str(self.db), "-origin", origin, "-key", verifier_key],
            check=True,
            capture_output=True,
        )

    def sizes(self) -> dict[str, int]:
        """What the witness holds for each origin (witnessctl list-logs)."""
        out = subprocess.run(
            [str(self.bin_dir / "witnessctl"), "list-logs", "-db", str(self.db)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return {item["origin"]: int(item["size"]) for item in map(json.loads, filter(None, out.splitlines()))}

    def close(self) -> None:
        self.stop()
        self._agent.terminate()
        self._agent.wait(10)
        shutil.rmtree(self.home, ignore_errors=True)


class TestCosigner:
    """A cosigner in process (tlog-cosignature v1, Ed25519): an impostor, or a witness nobody pinned."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str) -> None:
        self.name = name
        self._key = Ed25519PrivateKey.generate()
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_hash = key_hash(name, public, ALG_COSIGNATURE_V1)
        raw = bytes([ALG_COSIGNATURE_V1]) + public
        self.verifier_key = f"{name}+{self.key_hash:08x}+{base64.b64encode(raw).decode()}"

    def cosign(self, body: str, timestamp: int) -> str:
        signature = self._key.sign(cosigned_message(body, timestamp))
        blob = struct.pack(">IQ", self.key_hash, timestamp) + signature
        return f"\u2014 {self.name} {base64.b64encode(blob).decode()}\n"


def with_cosignatures(note: str, lines: list[str]) -> str:
    """The note with cosignature lines added after its own signatures (each once)."""
    body, present = split_note(note)
    added = [line if line.endswith("\n") else line + "\n" for line in lines]
    return body + "\n" + "".join(present + [line for line in added if line not in present])
