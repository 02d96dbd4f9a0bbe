"""The compose stack's first step: refuse to start on secrets left as `.env.example` has
them.

docker-compose.yml hands every secret of `.env` to the containers as a file (compose
`secrets:`, one file per variable, named as the variable in lower case, under
/run/secrets/), and runs this before any other service::

    python -m groundstation.deploy.secrets_check /run/secrets

It exits 1, naming each variable to set, when a secret is empty, still an example's
`change-me...` value, or too short for its server (InfluxDB refuses an admin password of
fewer than 8 characters, after the stack has half started). A variable missing from `.env`
altogether is refused by Compose itself, before anything starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

PLACEHOLDER = "change-me"
# Shortest value each server takes; the rest must merely not be empty.
MIN_LENGTH = {"INFLUXDB_ADMIN_PASSWORD": 8}
MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def problems(directory: Path) -> list[str]:
    """What is wrong with the secrets in ``directory``, one line per variable."""
    found = []
    files = sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []
    if not files:
        return [f"no secrets in {directory}: the compose file mounts them there"]
    for path in files:
        var = path.name.upper()
        value = path.read_text(encoding="utf-8", errors="replace").strip()
        if not value:
            found.append(f"{var} is empty in .env: set it to a secret of your own")
        elif value.lower().startswith(PLACEHOLDER):
            found.append(f"{var} in .env is still the example's {PLACEHOLDER!r} value: "
                         "replace it with a secret of your own")
        elif len(value) < MIN_LENGTH.get(var, 1):
            found.append(f"{var} in .env is {len(value)} characters: it needs at least "
                         f"{MIN_LENGTH[var]}")
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m groundstation.deploy.secrets_check DIR", file=sys.stderr)
        return 2
    directory = Path(args[0])
    found = problems(directory)
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if found:
        print(f"the stack does not start until they are set (make one with: {MAKE_ONE}); "
              "then: docker compose up -d", file=sys.stderr)
        return 1
    print(f"ok: {len(list(directory.iterdir()))} secrets set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
