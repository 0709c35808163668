"""Node settings: defaults < TOML file < flags, and every mistake named with its fix."""

import pytest

from gossipnet.config import build_config, load_toml, parse_hostport
from gossipnet.errors import UserError


def test_flags_override_file_which_overrides_defaults(tmp_path):
    f = tmp_path / "node.toml"
    f.write_text('udp-port = 7000\nhttp_port = 9000\npeers = ["10.0.0.2:7946"]\nmerge = "clipped"\n')
    cfg = build_config(load_toml(f), {"http_port": 9100, "merge": None})
    assert (cfg.udp_port, cfg.http_port, cfg.merge) == (7000, 9100, "clipped")
    assert cfg.peers == ("10.0.0.2:7946",)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"udp_port": 70000}, "not a port"),
        ({"merge": "median"}, "use 'average' or 'clipped'"),
        ({"shards": 4, "shard": 4}, r"must be in 0\.\.3"),
        ({"alpha": 0.0}, "must be positive"),
        ({"peers": ["nohost"]}, "is not HOST:PORT"),
        ({"announce_interval": -1.0}, "must be positive seconds"),
        ({"udp_port": "7000"}, "should be int"),
        ({"mdns": "yes"}, "should be bool"),
    ],
)
def test_bad_settings_are_user_errors_that_say_what_to_do(values, message):
    with pytest.raises(UserError, match=message):
        build_config(values, {})


def test_unknown_file_key_is_named(tmp_path):
    f = tmp_path / "node.toml"
    f.write_text("udp_prot = 1\n")
    with pytest.raises(UserError, match="unknown setting 'udp_prot'"):
        load_toml(f)


def test_invalid_toml_and_missing_file_are_user_errors(tmp_path):
    f = tmp_path / "node.toml"
    f.write_text("udp_port = = 1\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_toml(f)
    with pytest.raises(UserError, match="does not exist"):
        load_toml(tmp_path / "absent.toml")


def test_hostport_parses_ipv6_brackets():
    assert parse_hostport("[::1]:7946", what="--peer") == ("::1", 7946)


def test_the_presets_announce_interval_is_the_one_the_node_uses(tmp_path):
    from gossipnet.gossip import GossipConfig

    assert build_config({}, {"preset": "local"}).gossip_config() == GossipConfig.local()
    assert build_config({}, {}).gossip_config() == GossipConfig.lan()
    assert build_config({}, {"preset": "local", "announce_interval": 0.3}).gossip_config().announce_interval == 0.3
    # The old name still reads from files and flags, as the announce interval.
    path = tmp_path / "node.toml"
    path.write_text("gossip-interval = 2.5\n")
    assert build_config(load_toml(path), {}).gossip_config().announce_interval == 2.5
