"""A fleet: members of the Apollo and Soyuz definitions under their own vehicle ids
(groundstation/core/fleet.py), the one setting that names them (config, environment, flag),
the commands that load the definitions with them, and the broker rights their accounts get."""

from __future__ import annotations

from pathlib import Path

import pytest

from groundstation import cli as gs
from groundstation import config
from groundstation.commanding.operators import OperatorsError, load_operators
from groundstation.core import fleet, topics
from groundstation.core.definitions import hash_definition, load_all
from groundstation.core.replay_session import parse_session_message
from groundstation.deploy.broker_auth import fleet_acl
from groundstation.deploy.rabbitmq_auth import parse_acl
from groundstation.ingest.context import referenced_parameters
from groundstation.replay.session import session_message
from groundstation.storage.archive.format import stream_dir
from groundstation.storage.influx.lineprotocol import escape_tag

DEFS = load_all()


# -- expand ---------------------------------------------------------------------------------


def test_members_get_their_own_ids_and_every_stream_of_their_base() -> None:
    out = fleet.expand(DEFS, {"apollo_csm": 2, "soyuz": 1})
    assert list(out) == ["apollo_csm", "soyuz", "apollo_csm-1", "apollo_csm-2", "soyuz-1"]
    for member, base in (("apollo_csm-1", "apollo_csm"), ("apollo_csm-2", "apollo_csm"),
                         ("soyuz-1", "soyuz")):
        d = out[member]
        assert d.vehicle == member
        assert list(d.streams) == list(DEFS[base].streams)  # Apollo: hbr and lbr
        for stream, sd in d.streams.items():
            assert sd.vehicle == member and d.stream_definition(stream) is sd
            base_sd = DEFS[base].streams[stream]
            assert sd.subset_of == base_sd.subset_of and sd.frame == base_sd.frame
            assert sd.all_ids == base_sd.all_ids
    assert out["apollo_csm-2"].name == {"en": "Apollo CSM #2", "ru": "Аполлон #2"}
    # The base definitions are the same objects, and untouched.
    assert out["apollo_csm"] is DEFS["apollo_csm"]
    assert {s.vehicle for s in DEFS["apollo_csm"].streams.values()} == {"apollo_csm"}


def test_no_fleet_changes_nothing() -> None:
    assert fleet.expand(DEFS, {}) == DEFS
    assert fleet.expand(DEFS, {"apollo_csm": 0}) == DEFS


def test_member_names_are_topic_levels_tags_and_archive_names(tmp_path: Path) -> None:
    members = fleet.members({"apollo_csm": 12, "soyuz": 3})
    assert list(members)[:2] == ["apollo_csm-1", "apollo_csm-2"]
    assert members["soyuz-3"] == "soyuz" and len(members) == 15
    for m in members:
        assert topics.parse_telemetry(topics.telemetry(m, "hbr")).vehicle == m
        assert escape_tag(m) == m  # an InfluxDB tag value as it is
        assert stream_dir(tmp_path, m, "hbr", topics.LIVE).parent.name == m
        assert fleet.base_of(m) == members[m]
    assert fleet.base_of("apollo_csm") is None and fleet.base_of("apollo_csm-0") is None


def test_limit_contexts_own_parameters_are_the_members_others_stay_with_the_base() -> None:
    wanted = referenced_parameters(fleet.expand(DEFS, {"apollo_csm": 1, "soyuz": 1}))
    # Apollo's contexts look at its own dm_attached: each member at its own.
    assert "dm_attached" in wanted["apollo_csm"] and "dm_attached" in wanted["apollo_csm-1"]
    # Soyuz's look at Apollo's DM hatch: the member's too look at the base Apollo's.
    assert "dm_hatch_soyuz" in wanted["apollo_csm"]
    assert "dm_hatch_soyuz" not in wanted["apollo_csm-1"]
    assert "cabin_press_mode" in wanted["soyuz-1"]


@pytest.mark.parametrize(("setting", "message"), [
    ({"mars": 2}, "fleet entry mars=2: no telemetry definition of a vehicle 'mars' "
                  "(defined: apollo_csm, soyuz)"),
    ({"Apollo": 1}, "fleet entry Apollo=1: 'Apollo' is not a vehicle id"),
    ({"soyuz": -1}, "fleet entry soyuz=-1: the count must be 0 to 999"),
    ({"soyuz": 1000}, "fleet entry soyuz=1000: the count must be 0 to 999"),
    ({"soyuz": True}, "fleet entry soyuz=True: the count must be a whole number"),
    ({"a" * 62: 10}, "is longer than 64 characters"),
])
def test_bad_entries_are_named(setting: dict[str, int], message: str) -> None:
    with pytest.raises(fleet.FleetError) as err:
        fleet.expand(DEFS, setting)
    assert message in str(err.value)


def test_a_member_cannot_take_a_defined_vehicles_id() -> None:
    taken = {**DEFS, "soyuz-1": fleet.member_definition(DEFS["soyuz"], "soyuz-1")}
    with pytest.raises(fleet.FleetError, match=r"fleet entry soyuz=2: its member 'soyuz-1' "
                                               r"is already a defined vehicle"):
        fleet.expand(taken, {"soyuz": 2})
    with pytest.raises(fleet.FleetError, match="'soyuz-1' is not a member's name of "
                                               "'apollo_csm'"):
        fleet.member_definition(DEFS["apollo_csm"], "soyuz-1")


@pytest.mark.parametrize(("text", "expected"), [
    ("apollo_csm=4,soyuz=4", {"apollo_csm": 4, "soyuz": 4}),
    (" apollo_csm = 2 , ", {"apollo_csm": 2}),
    ("", {}),
])
def test_parse(text: str, expected: dict[str, int]) -> None:
    assert fleet.parse(text) == expected
    assert fleet.parse(fleet.text(expected)) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("apollo_csm4", "fleet entry 'apollo_csm4': write BASE=COUNT, e.g. apollo_csm=4"),
    ("apollo_csm=four", "fleet entry 'apollo_csm=four': the count 'four' is not a whole "
                        "number"),
    ("soyuz=1,soyuz=2", "fleet entry 'soyuz=2': 'soyuz' is given twice"),
    ("soyuz-1=2", "fleet entry soyuz-1=2: 'soyuz-1' is not a vehicle id"),
])
def test_parse_errors_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(fleet.FleetError) as err:
        fleet.parse(text)
    assert str(err.value).startswith(message)


# -- the one setting --------------------------------------------------------------------------


def test_the_setting_from_file_environment_and_flag(tmp_path: Path) -> None:
    f = tmp_path / "gs.toml"
    f.write_text("[ingest]\nfleet = {apollo_csm = 3}\n", encoding="utf-8")
    assert config.load(f, env={}).ingest.fleet == {"apollo_csm": 3}
    env = {"GS_INGEST_FLEET": "apollo_csm=2,soyuz=1"}
    assert config.load(f, env=env).ingest.fleet == {"apollo_csm": 2, "soyuz": 1}
    flags = {"ingest__fleet": "soyuz=5"}
    assert config.load(f, env=env, flags=flags).ingest.fleet == {"soyuz": 5}
    assert config.load(env={}).ingest.fleet == {}
    # --print-config writes it back as TOML the loader reads.
    printed = tmp_path / "printed.toml"
    printed.write_text(config.example_toml(config.load(f, env=env)), encoding="utf-8")
    assert config.load(printed, env={}).ingest.fleet == {"apollo_csm": 2, "soyuz": 1}


def test_a_bad_setting_says_where_it_came_from() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(env={"GS_INGEST_FLEET": "apollo_csm=x"})
    assert "environment GS_INGEST_FLEET: fleet entry 'apollo_csm=x': the count 'x'" \
        in str(err.value)


def test_commands_load_the_members(capsys: pytest.CaptureFixture[str]) -> None:
    assert gs.main(["defs", "show", "soyuz-2", "--fleet", "soyuz=2"]) == 0
    assert "sa_press" in capsys.readouterr().out
    assert gs.main(["defs", "show", "soyuz-2"]) == 1  # no fleet: no such vehicle
    assert "no vehicle 'soyuz-2'" in capsys.readouterr().err
    assert gs.main(["defs", "check", "--fleet", "apollo_csm=8,soyuz=8"]) == 0
    assert "ok  fleet: apollo_csm-1 .. apollo_csm-8, 8 more apollo_csm" \
        in capsys.readouterr().out


def test_a_fleet_of_an_undefined_vehicle_stops_the_command(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert gs.main(["defs", "check", "--fleet", "mars=2"]) == 1
    err = capsys.readouterr().err
    assert "[ingest] fleet entry mars=2: no telemetry definition of a vehicle 'mars'" in err
    assert "Traceback" not in err


def test_sim_fleet_needs_members(capsys: pytest.CaptureFixture[str]) -> None:
    assert gs.main(["sim", "fleet"]) == 2
    assert "the fleet has no members: give --fleet" in capsys.readouterr().err


# -- broker accounts -----------------------------------------------------------------------


def test_members_have_their_bases_rights_over_their_own_topics() -> None:
    acl = parse_acl(fleet_acl({"apollo_csm": 2, "soyuz": 1}))
    assert acl.users["apollo_csm-2"] == acl.users["apollo_csm"]
    assert acl.users["soyuz-1"] == acl.users["soyuz"]
    me = "apollo_csm-2"
    assert acl.allows(me, "write", "telemetry/live/apollo_csm-2/hbr")
    assert acl.allows(me, "write", "sim/state/apollo_csm-2")
    for topic in ("telemetry/live/apollo_csm/hbr", "telemetry/live/apollo_csm-1/hbr",
                  "telemetry/replay/s/apollo_csm-2/hbr", "ack/apollo_csm-2/apollo_csm",
                  "cmd/request/apollo_csm-2/apollo_csm", "calls/apollo_csm-2/d"):
        assert not acl.allows(me, "write", topic), topic
    assert not acl.allows(me, "read", "params/live/apollo_csm-2")


def test_a_fleet_acl_needs_the_bases_block(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("pattern write telemetry/live/%u/#\nuser apollo_csm\ntopic deny ack/#\n",
                   encoding="utf-8")
    with pytest.raises(ValueError, match=r"fleet entry soyuz=1: .* has no 'user soyuz' block"):
        fleet_acl({"soyuz": 1}, acl)


def test_a_member_is_never_an_operator(tmp_path: Path) -> None:
    f = tmp_path / "operators.toml"
    f.write_text('[operators]\n"soyuz-3" = ["FLIGHT"]\n', encoding="utf-8")
    with pytest.raises(OperatorsError, match="soyuz-3 is a vehicle or a service account"):
        load_operators(f)


# -- replay ----------------------------------------------------------------------------------


def test_a_members_recorded_definition_is_its_bases_file_under_its_id() -> None:
    # What the archive keeps for a member, and a replay session sends: the base's file.
    text = Path(DEFS["soyuz"].path).read_text(encoding="utf-8")
    sha = hash_definition(text)
    msg = session_message("s", "recorded", {"soyuz-3": ("tm", sha, text)})
    info = parse_session_message("replay/session/s", msg)  # an ingest with no fleet set
    assert info is not None
    d = info.definitions["soyuz-3"]
    assert d.vehicle == "soyuz-3" and d.all_ids == DEFS["soyuz"].all_ids
    wrong = session_message("s", "recorded", {"apollo_csm-1": ("tm", sha, text)})
    with pytest.raises(ValueError, match=r"definitions\['apollo_csm-1'\] define vehicle "
                                         "'soyuz'"):
        parse_session_message("replay/session/s", wrong)
