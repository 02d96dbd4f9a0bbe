"""Broker accounts: Mosquitto password files, and the broker settings that use them.

The ACL lives in one file, ``deploy/mosquitto/acl``, which docker-compose mounts and the
tests load through ``broker_config``, so the tests prove the rules that run.

Password files are written in Mosquitto 2's own format, generated here rather than by
calling ``mosquitto_passwd`` so that a deployment can make one without the broker
installed::

    user:$7$<iterations>$<base64 12-byte salt>$<base64 PBKDF2-HMAC-SHA512, 64 bytes>

(``mosquitto_passwd`` writes the same with 101 iterations; the broker accepts any count,
and we use more.) The tests check our lines against ``mosquitto_passwd``'s and log in
to the real broker with them.

For a deployment::

    python -m groundstation.deploy.broker_auth /mosquitto/config/passwd <<EOF
    apollo_csm <password>
    ...
    EOF

reads "user password" lines on standard input (never on the command line, where other
users could see them in the process list) and writes the file.

A fleet (groundstation/core/fleet.py: apollo_csm-1 .. apollo_csm-N, each its own vehicle)
logs in one account per member, user name = the member's vehicle id, as the base ships do.
The ACL's patterns already give such an account its own telemetry and state only; what
keeps it from being taken for an operator is its base's ``user`` block, which
``fleet_acl`` copies for each member::

    python -m groundstation.deploy.broker_auth --fleet-acl apollo_csm=8,soyuz=8 > acl

writes the one ACL with the members' blocks (mount it instead of deploy/mosquitto/acl; the
RabbitMQ cluster reads the same text: ``rabbitmq_auth.parse_acl``), and the members'
accounts go into the password file like any other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from groundstation import paths
from groundstation.core import fleet
from groundstation.storage.durable import atomic_write

__all__ = [
    "ACL_FILE",
    "CONF_FILE",
    "SHARED_SETTINGS",
    "broker_config",
    "deploy_settings",
    "fleet_acl",
    "hash_password",
    "secure_broker_config",
    "verify_password",
    "write_password_file",
]

DEPLOY_DIR = paths.mosquitto_dir()
ACL_FILE = DEPLOY_DIR / "acl"
CONF_FILE = DEPLOY_DIR / "mosquitto.conf"

# Settings of deploy/mosquitto/mosquitto.conf that the tests' broker takes over as they
# are. The rest (listener, paths, logging, anonymous access) MosquittoServer sets itself.
SHARED_SETTINGS = (
    "autosave_interval",
    "persistent_client_expiration",
    "max_queued_messages",
    "max_inflight_messages",
    "max_packet_size",
    "set_tcp_nodelay",
)

# PBKDF2-SHA512 work factor. The broker recomputes the hash at every CONNECT: 10,000
# rounds cost a few milliseconds there, and a hundred times mosquitto_passwd's 101 for
# anyone holding a stolen password file.
DEFAULT_ITERATIONS = 10_000
_SALT_BYTES = 12  # what mosquitto_passwd uses

# A user name becomes a topic level through %u: '/', '+' and '#' would change what the
# ACL patterns mean, ':' would break the password file, whitespace the stdin format.
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def _check_user(user: str) -> str:
    if not _USER_RE.fullmatch(user):
        raise ValueError(f"user name {user!r}: use letters, digits, '_', '.', '-' (at most "
                         "64, not starting with '.' or '-'); it becomes a topic level")
    return user


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """Mosquitto 2's encoding of a password: ``$7$<iterations>$<salt>$<hash>``."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    if "\n" in password or "\r" in password:
        raise ValueError("a password cannot contain a line break")
    if salt is None:
        salt = os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def verify_password(encoded: str, password: str) -> bool:
    """Does ``password`` match an encoding (or a whole ``user:...`` line) of type $7$?"""
    encoded = encoded.strip().rpartition(":")[2]
    parts = encoded.split("$")
    if len(parts) != 5 or parts[:2] != ["", "7"]:
        raise ValueError("not a Mosquitto $7$ (PBKDF2-SHA512) password encoding")
    iterations = int(parts[2])
    salt = base64.b64decode(parts[3])
    expected = base64.b64decode(parts[4])
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(got, expected)


def write_password_file(path: str | os.PathLike[str], users: Mapping[str, str], *,
                        iterations: int = DEFAULT_ITERATIONS, mode: int = 0o600) -> Path:
    """Write a Mosquitto password file for ``{user: password}``; return its path.

    Written to a temporary file and renamed, so a broker re-reading it on SIGHUP never
    sees half a file. ``mode`` 0600 keeps it private to its owner: in a container, make
    the owner the broker's user.
    """
    path = Path(path)
    lines = [f"{_check_user(user)}:{hash_password(pw, iterations=iterations)}\n"
             for user, pw in users.items()]
    if not lines:
        raise ValueError("no users: a broker without anonymous access would admit nobody")
    atomic_write(path, "".join(lines).encode("utf-8"), mode=mode)
    return path


def deploy_settings(conf_file: str | os.PathLike[str] = CONF_FILE,
                    keys: Sequence[str] = SHARED_SETTINGS) -> list[str]:
    """The lines of the deployment's mosquitto.conf that set one of ``keys``."""
    out = []
    for raw in Path(conf_file).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and line.split()[0] in keys:
            out.append(line)
    return out


def broker_config(password_file: str | os.PathLike[str], *,
                  acl_file: str | os.PathLike[str] = ACL_FILE,
                  conf_file: str | os.PathLike[str] | None = CONF_FILE) -> list[str]:
    """``extra_config`` lines for ``MosquittoServer(..., allow_anonymous=False)``.

    Authentication by ``password_file``, the repository's ACL, and the deployment's
    shared settings (``SHARED_SETTINGS``; ``conf_file=None`` leaves them out).
    """
    for f in (password_file, acl_file):
        if not Path(f).is_file():
            raise FileNotFoundError(f"broker file {f} does not exist")
    lines = [f"password_file {Path(password_file).resolve()}",
             f"acl_file {Path(acl_file).resolve()}"]
    if conf_file is not None:
        lines += deploy_settings(conf_file)
    return lines


def secure_broker_config(directory: str | os.PathLike[str], users: Mapping[str, str], *,
                         acl_file: str | os.PathLike[str] = ACL_FILE,
                         iterations: int = DEFAULT_ITERATIONS,
                         fleet_setting: Mapping[str, int] | None = None) -> list[str]:
    """Write ``directory/passwd`` for ``users`` and return the broker's ``extra_config``.
    With a fleet, the ACL is ``acl_file``'s with the members' blocks (``fleet_acl``),
    written as ``directory/acl``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pw = write_password_file(directory / "passwd", users, iterations=iterations)
    if fleet_setting:
        acl_text = fleet_acl(fleet_setting, acl_file)
        acl_file = directory / "acl"
        atomic_write(acl_file, acl_text.encode("utf-8"), mode=0o644)
    return broker_config(pw, acl_file=acl_file)


def fleet_acl(fleet_setting: Mapping[str, int],
              acl_file: str | os.PathLike[str] = ACL_FILE) -> str:
    """The ACL's text with a ``user <member>`` block for every member of the fleet: its
    base vehicle's rules (a vehicle is no operator), so a member has exactly its base's
    rights over its own topics. ValueError if a base has no block of its own in the ACL
    (its members would be taken for operators)."""
    text = Path(acl_file).read_text(encoding="utf-8")
    blocks = _user_blocks(text)
    members = fleet.members(fleet_setting)
    missing = sorted({b for b in members.values() if b not in blocks})
    if missing:
        raise ValueError(f"fleet entry {missing[0]}={fleet_setting[missing[0]]}: "
                         f"{acl_file} has no 'user {missing[0]}' block to give its members")
    out = [text.rstrip("\n"), "",
           "# --- Fleet members (groundstation.core.fleet; written by broker_auth.fleet_acl) --",
           "# Each is a vehicle with its base's rules: its own telemetry and state by the",
           "# patterns above, no operator's rights by these."]
    for member, base in members.items():
        out += ["", f"user {_check_user(member)}", *blocks[base]]
    return "\n".join(out) + "\n"


def _user_blocks(acl_text: str) -> dict[str, list[str]]:
    """Each ``user NAME`` block's rule lines (comments and blank lines left out)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in acl_text.splitlines():
        line = raw.strip()
        if line.startswith("user "):
            current = blocks.setdefault(line.split(None, 1)[1], [])
        elif line.startswith("pattern "):
            current = None
        elif current is not None and line and not line.startswith("#"):
            current.append(line)
    return blocks


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--fleet-acl":
        try:
            sys.stdout.write(fleet_acl(fleet.parse(args[1])))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m groundstation.deploy.broker_auth PASSWORD_FILE  "
              "(reads 'user password' lines on stdin)\n"
              "       python -m groundstation.deploy.broker_auth --fleet-acl "
              "apollo_csm=8,soyuz=8  (the ACL with the fleet's members, on stdout)",
              file=sys.stderr)
        return 2
    users: dict[str, str] = {}
    for n, line in enumerate(sys.stdin, 1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.strip().partition(" ")
        if not sep or not password:
            print(f"stdin line {n}: expected 'user password'", file=sys.stderr)
            return 2
        users[user] = password
    try:
        path = write_password_file(args[0], users)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(users)} users to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
