"""Broker security with the real Mosquitto: authentication and the repository's ACL.

Mosquitto drops a denied publish silently (MQTT 3.1.1 has no refusal for QoS 0/1), so
every test proves non-delivery the same way: the denied message is published first, then
a permitted marker *from the same connection*, and the subscriber must receive the
marker and nothing denied before it. The broker handles one connection's packets in
order and queues each message for its subscribers before it acknowledges it, so had
the denied message been let through it would have arrived before the marker.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from groundstation.deploy.broker_auth import (
    ACL_FILE,
    CONF_FILE,
    SHARED_SETTINGS,
    broker_config,
    deploy_settings,
    hash_password,
    verify_password,
    write_password_file,
)
from groundstation.deploy.servers import find_binary

# -- the files -------------------------------------------------------------------------------


def test_password_encoding_matches_mosquitto_passwd(tmp_path: Path) -> None:
    tool = find_binary("mosquitto_passwd")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto_passwd not found (apt-get install mosquitto)")
        pytest.skip("mosquitto_passwd not found (apt-get install mosquitto)")
    pw = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(pw), "flight", "go/no-go"], check=True,
                   capture_output=True)
    line = pw.read_text().strip()
    assert verify_password(line, "go/no-go")
    assert not verify_password(line, "go/no go")
    # Same salt and iteration count: the same encoding, byte for byte.
    _, _, iterations, salt, _ = line.split(":", 1)[1].split("$")
    ours = hash_password("go/no-go", iterations=int(iterations), salt=base64.b64decode(salt))
    assert line == f"flight:{ours}"


def test_password_file_is_private_and_checks_names(tmp_path: Path) -> None:
    path = write_password_file(tmp_path / "passwd", {"flight": "a b c", "eecom": "x"})
    assert (path.stat().st_mode & 0o777) == 0o600
    lines = path.read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["flight", "eecom"]
    assert verify_password(lines[0], "a b c")
    for bad in ["a/b", "+", "#", "a:b", "", ".x", "a b"]:
        with pytest.raises(ValueError):
            write_password_file(tmp_path / "bad", {bad: "pw"})
    with pytest.raises(ValueError):
        write_password_file(tmp_path / "bad", {"flight": "two\nlines"})


def test_password_file_from_stdin(tmp_path: Path) -> None:
    out = tmp_path / "passwd"
    proc = subprocess.run([sys.executable, "-m", "groundstation.deploy.broker_auth", str(out)],
                          input="# accounts\napollo_csm s3cret\n\nflight go no-go\n",
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert verify_password(lines[0], "s3cret") and verify_password(lines[1], "go no-go")


def test_broker_config_uses_the_repository_acl_and_deploy_settings(tmp_path: Path) -> None:
    pw = write_password_file(tmp_path / "pw", {"flight": "x"})
    lines = broker_config(pw)
    assert lines[:2] == [f"password_file {pw.resolve()}", f"acl_file {ACL_FILE.resolve()}"]
    shared = deploy_settings()
    assert lines[2:] == shared
    assert sorted(line.split()[0] for line in shared) == sorted(SHARED_SETTINGS)
    # The deployment's own file authenticates with the same ACL.
    conf = {ln.split()[0]: ln.split(None, 1)[1] for ln in CONF_FILE.read_text().splitlines()
            if ln.strip() and not ln.startswith("#") and ln.split()[0] != "log_type"}
    assert conf["allow_anonymous"] == "false"
    assert conf["persistence"] == "true"
    assert conf["acl_file"] == "/mosquitto/config/acl"
    assert "password_file" in conf and "persistence_location" in conf
