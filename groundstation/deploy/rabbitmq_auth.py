r"""Broker accounts for the RabbitMQ cluster, with the rights of the one ACL.

The rights live in ``deploy/mosquitto/acl`` (Mosquitto's syntax, read by the single-node
broker); this module reads the same file and turns it into RabbitMQ's users and
permissions, so the two brokers give the same rights from one source::

    definitions(users)             # RabbitMQ definitions (JSON): users, vhost and topic
                                   # permissions; `rabbitmqctl import_definitions`, or
                                   # `load_definitions` in rabbitmq.conf
    apply_accounts(cluster, users) # the same, into a running cluster (RabbitMQCluster)

For a deployment, ``python -m groundstation.deploy.rabbitmq_auth definitions.json`` reads
"user password" lines on standard input (never the command line) and writes the file.

How the rights map (the MQTT plugin publishes on the ``amq.topic`` exchange with the topic
as routing key, '/' and '.' swapped: ``telemetry/live/soyuz/tm`` is
``telemetry.live.soyuz.tm``):

* Each account gets one *topic permission* on ``amq.topic``: a write regex (checked on every
  publish, against its routing key) and a read regex (checked on every subscription,
  against its filter: ``params/#`` is checked as ``params.#``). Each regex says what
  Mosquitto's rules say for that account: none of its ``topic deny`` filters, and one of
  its ``topic`` filters or of the ``pattern`` filters (``%u`` replaced by its name):
  ``^(?!(?:DENY|...)$)(?:ALLOW|...)$``. An account with no right of a kind gets a regex
  that matches nothing (RabbitMQ lets everything through when a user has no topic
  permission at all, so every account gets one).
* Vhost permissions (configure, write, read; regexes on resource *names*, queue or
  exchange alike) are the least the MQTT plugin needs, which does, as the account
  (rabbit_mqtt_processor, 3.10): declare and delete its clients' queues
  ``mqtt-subscription-<client id>qos0|1`` (configure; a persistent session's at connect),
  bind them to amq.topic (write on the queue, read on amq.topic), consume them (read), and
  publish on amq.topic (write). A client id is ``<user>.<anything>``
  (groundstation.mqtt.account_client_id; a user name has no '.'), so each account gets its
  own clients' queues alone, ``^mqtt-subscription-<user>\..*qos[01]$`` (RabbitMQ 3.10
  expands ``{username}`` in topic permissions only, so the name is written in; a client
  under another account's name, or none, cannot subscribe), and amq.topic for writing
  (reading) only if it may write (read) some topic. Never ``amq.default``: writing to the
  default exchange reaches every queue by name, its subscription queues included.
* The station's AMQP services (``AMQP_RESOURCES``) get their own resources besides: the
  ingest, every name under ``gs.`` (its partitions' exchanges and queues), which no other
  account's regex matches. It binds them from amq.topic with its read right on amq.topic,
  by binding keys its topic read regex allows (``telemetry.#``, not ``#``). It publishes
  state through an exchange of its own, not the default exchange (above).
* Accounts the ACL does not name are operators (the ``pattern`` lines alone), as in
  Mosquitto.

Where RabbitMQ 3.10 differs from Mosquitto (the tests show each):

* A refused publish or subscription closes the client's connection (Mosquitto drops the
  message, or the delivery, and keeps it). The station's clients reconnect; a client must
  subscribe only to what its account may read (a console subscribing to ``#`` is refused,
  not filtered).
* Read rights are checked once, on the subscription's filter, not on each delivery: a
  ``topic deny`` carved out of a wider read right (the ingest's ``ack/ingest/#`` inside
  ``ack/#``) stops a subscription that names it, not one to the wider filter. In the ACL
  as it stands nobody can publish under such a carve-out, so nothing more is read.

Over AMQP (tests/integration/test_cluster_amqp_rights.py shows each): every account may log
in on the AMQP port with its password, with the same rights. Checked as over MQTT: a
publish to amq.topic against the topic write regex (its routing key), a queue or exchange
bound from amq.topic against the read regex (its binding key). Refused: another account's
queues (basic.get, consume, purge, delete, bind, declare), every ``gs.`` resource but to
the ingest, every other exchange.

What 3.10 leaves open (the gap; the last test of that file shows it as it is): *an account
that reaches the AMQP port can publish on amq.topic under any routing key*, past its topic
write regex, which RabbitMQ checks on the routing key of a publish made to amq.topic
itself and on nothing else:

* the ``CC`` and ``BCC`` headers of a publish to amq.topic route copies under keys of the
  publisher's choosing, never checked (later RabbitMQ checks them: rabbitmq-server#12553,
  backported to 4.0.x);
* an exchange of the account's own (a name its configure regex allows: one of its queue
  names, as an exchange) with amq.topic as its alternate exchange, or bound to amq.topic
  (write on amq.topic, which its MQTT publishes need), passes on whatever is published to
  it, under any key; so does a queue of its own with amq.topic as its dead-letter
  exchange and any dead-letter routing key.

So over AMQP an operator or a vehicle can put a message on a ship's uplink, another
operator's acknowledgement or any telemetry topic (the ingest too, through its ``gs.``
exchanges); its reads stay within its rights. No vhost permission closes this: every
account both publishes (write on amq.topic) and subscribes (configure on its queues) over
MQTT, and the same rights hold on both ports. Per-user limits do not separate the ports
either (``max-connections`` counts the MQTT plugin's connections: 0 refuses MQTT logins
too). What closes it is keeping the vehicles' and operators' accounts off the AMQP port:
the AMQP listener only on the services' network, or AMQP for certificate holders only
(``auth_mechanisms.1 = EXTERNAL``, rabbitmq_auth_mechanism_ssl, a TLS listener requiring a
client certificate: the MQTT plugin's password logins do not go through AMQP's
mechanisms, so MQTT is unaffected), with certificates for the AMQP services alone. The
ingest would still have the gap for itself, as long as one account both consumes over
AMQP and publishes over MQTT (write on amq.topic); an AMQP-only account for its consuming
side, with no write on amq.topic, would not.

RabbitMQ 3.10 does not tie a client id to an account (nor does Mosquitto): a login under
another account's client id throws that client off, though it never gets its queue.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from groundstation.deploy.broker_auth import ACL_FILE
from groundstation.mqtt import ACCOUNT_SEPARATOR

__all__ = [
    "AMQP_RESOURCES",
    "EXCHANGE",
    "Acl",
    "apply_accounts",
    "definitions",
    "hash_password",
    "parse_acl",
    "topic_regex",
    "vhost_permissions",
]

EXCHANGE = "amq.topic"  # the MQTT plugin's exchange (mqtt.exchange)
VHOST = "/"
NOTHING = "^(?!)"  # a regex no routing key matches
# The station's services that use AMQP besides MQTT, and the resources that are theirs alone
# (configure, write and read: names are checked, not kinds, so queues and exchanges alike).
# The ingest's partitions: exchanges gs.telemetry and gs.telemetry.unrouted (bound from
# amq.topic, which its read right on amq.topic and its topic read regex allow), quorum
# queues gs.ingest.pNN, gs.ingest.unrouted, gs.state.pNN.
AMQP_RESOURCES: dict[str, str] = {"ingest": r"gs\..*"}
# Narrower than Mosquitto's user names: a name becomes a routing-key level, where '.' would
# split it in two.
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")

Access = Literal["read", "write"]


@dataclass(frozen=True)
class Rule:
    access: Literal["read", "write", "readwrite", "deny"]
    filter: str

    def grants(self, access: Access) -> bool:
        return self.access in (access, "readwrite")


@dataclass
class Acl:
    """A Mosquitto ACL file: the ``pattern`` rules (every user, %u substituted) and each
    named user's ``topic`` rules."""

    patterns: list[Rule] = field(default_factory=list)
    users: dict[str, list[Rule]] = field(default_factory=dict)

    def rules(self, user: str) -> tuple[list[str], list[str], list[str]]:
        """The filters that refuse ``user`` everything (deny), and those that let it
        read, and write, in Mosquitto's order: its own rules, then the patterns."""
        own = self.users.get(user, [])
        subst = [Rule(r.access, r.filter.replace("%u", user)) for r in self.patterns]
        deny = [r.filter for r in (*own, *subst) if r.access == "deny"]
        read = [r.filter for r in (*own, *subst) if r.grants("read")]
        write = [r.filter for r in (*own, *subst) if r.grants("write")]
        return deny, read, write

    def allows(self, user: str, access: Access, topic: str) -> bool:
        """Mosquitto's answer for a publish (write) or a delivery (read) on ``topic``."""
        deny, read, write = self.rules(user)
        if any(mqtt_matches(f, topic) for f in deny):
            return False
        return any(mqtt_matches(f, topic) for f in (read if access == "read" else write))


def parse_acl(text: str) -> Acl:
    acl = Acl()
    user: str | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "user" and len(words) == 2:
            user = words[1]
            acl.users.setdefault(user, [])
            continue
        if words[0] not in ("topic", "pattern") or len(words) not in (2, 3):
            raise ValueError(f"ACL line {n}: cannot read {line!r}")
        access = words[1] if len(words) == 3 else "readwrite"
        if access not in ("read", "write", "readwrite", "deny"):
            raise ValueError(f"ACL line {n}: unknown access {access!r}")
        rule = Rule(access, words[-1])  # type: ignore[arg-type]
        if words[0] == "pattern":
            acl.patterns.append(rule)
        elif user is None:
            raise ValueError(f"ACL line {n}: a topic rule before any user line (anonymous "
                             "access has no place in the cluster)")
        else:
            acl.users[user].append(rule)
    return acl


def load_acl(path: str | os.PathLike[str] = ACL_FILE) -> Acl:
    return parse_acl(Path(path).read_text(encoding="utf-8"))


def mqtt_matches(filter_: str, topic: str) -> bool:
    """Does MQTT topic filter ``filter_`` match topic name ``topic``?"""
    fl, tl = filter_.split("/"), topic.split("/")
    for i, level in enumerate(fl):
        if level == "#":
            return True
        if i >= len(tl) or (level != "+" and level != tl[i]):
            return False
    return len(fl) == len(tl)


def _amqp_level(level: str) -> str:
    return level.replace(".", "/")  # the MQTT plugin swaps '.' and '/'


def filter_regex(filter_: str) -> str:
    """The (unanchored) regex of routing keys that MQTT filter ``filter_`` matches."""
    out = ""
    for i, level in enumerate(filter_.split("/")):
        if level == "#":
            return out + ("(?:\\..*)?" if i else ".*")
        out += ("\\." if i else "") + ("[^.]*" if level == "+"
                                       else re.escape(_amqp_level(level)))
    return out


def topic_regex(acl: Acl, user: str, access: Access) -> str:
    """RabbitMQ's topic permission regex for ``user``'s ``access`` on amq.topic."""
    deny, read, write = acl.rules(user)
    allow = read if access == "read" else write
    if not allow:
        return NOTHING
    body = "(?:" + "|".join(dict.fromkeys(filter_regex(f) for f in allow)) + ")$"
    if deny:
        body = "(?!(?:" + "|".join(dict.fromkeys(filter_regex(f) for f in deny)) + ")$)" + body
    return "^" + body


def own_queues(user: str) -> str:
    """The (unanchored) regex of the MQTT plugin's queues of ``user``'s clients:
    ``mqtt-subscription-<client id>qos0|1``, with client ids under the account's name
    (groundstation.mqtt.account_client_id)."""
    return rf"mqtt-subscription-{re.escape(_check_user(user) + ACCOUNT_SEPARATOR)}.*qos[01]"


def vhost_permissions(acl: Acl, user: str) -> dict[str, str]:
    """``user``'s configure, write and read regexes on the vhost: what the MQTT plugin does
    for it (declare and delete its clients' queues; bind them to amq.topic, write on the
    queue and read on amq.topic; consume them; publish on amq.topic), amq.topic only for an
    account that may read, or write, some topic; and its AMQP resources, for a service."""
    own = [own_queues(user)]
    if user in AMQP_RESOURCES:
        own.append(AMQP_RESOURCES[user])
    exchange = [re.escape(EXCHANGE)]

    def either(names: list[str]) -> str:
        return "^(?:" + "|".join(names) + ")$"

    return {
        "configure": either(own),
        "write": either((exchange if topic_regex(acl, user, "write") != NOTHING else []) + own),
        "read": either((exchange if topic_regex(acl, user, "read") != NOTHING else []) + own),
    }


def hash_password(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + SHA-256(salt + password)),
    with a 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _check_user(user: str) -> str:
    if not _USER_RE.fullmatch(user):
        raise ValueError(f"user name {user!r}: use letters, digits, '_' and '-' (at most 64, "
                         "not starting with '-'); it becomes a routing-key level")
    return user


def definitions(users: Mapping[str, str], acl: Acl | None = None) -> dict[str, Any]:
    """RabbitMQ definitions for ``{user: password}`` with the ACL's rights."""
    acl = acl if acl is not None else load_acl()
    if not users:
        raise ValueError("no users: a broker without anonymous access would admit nobody")
    return {
        "vhosts": [{"name": VHOST}],
        "users": [{"name": _check_user(u), "password_hash": hash_password(pw),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}
                  for u, pw in users.items()],
        "permissions": [{"user": u, "vhost": VHOST, **vhost_permissions(acl, u)}
                        for u in users],
        "topic_permissions": [{"user": u, "vhost": VHOST, "exchange": EXCHANGE,
                               "write": topic_regex(acl, u, "write"),
                               "read": topic_regex(acl, u, "read")} for u in users],
    }


class _Ctl(Protocol):
    data_dir: Path

    def ctl(self, *args: str, stdin: str | None = None) -> str: ...


def apply_accounts(cluster: _Ctl, users: Mapping[str, str], acl: Acl | None = None) -> None:
    """Load ``users`` with the ACL's rights into a running cluster (users, vhost and topic
    permissions are cluster-wide), and remove RabbitMQ's default account (guest)."""
    path = cluster.data_dir / "definitions.json"
    path.write_text(json.dumps(definitions(users, acl), indent=1))
    path.chmod(0o600)  # password hashes
    cluster.ctl("import_definitions", str(path))
    existing = json.loads(cluster.ctl("list_users", "--formatter", "json"))
    if "guest" not in users and any(u.get("user") == "guest" for u in existing):
        cluster.ctl("delete_user", "guest")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m groundstation.deploy.rabbitmq_auth DEFINITIONS_FILE  "
              "(reads 'user password' lines on stdin)", file=sys.stderr)
        return 2
    users: dict[str, str] = {}
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.strip().partition(" ")
        if not sep or not password:
            print(f"stdin line {n}: expected 'user password'", file=sys.stderr)
            return 2
        users[user] = password
    try:
        text = json.dumps(definitions(users), indent=1)
        path = Path(args[0])
        path.write_text(text + "\n", encoding="utf-8")
        path.chmod(0o600)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(users)} users to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
