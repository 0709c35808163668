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
        ({"merge": "median"}, "use 'guarded', 'average' or 'clipped'"),
        ({"shards": 4, "shard": 4}, r"must be in 0\.\.3"),
        ({"alpha": 0.0}, "must be positive"),
        ({"peers": ["nohost"]}, "is not HOST:PORT"),
        ({"announce_interval": -1.0}, "must be positive seconds"),
        ({"udp_port": "7000"}, "should be int"),
        ({"mdns": "yes"}, "should be bool"),
        ({"lr_schedule": "cosine"}, "use 'constant' or 'age'"),
        ({"lr_half_life": 0}, "positive number of images"),
        ({"lr_half_life": float("inf")}, "positive number of images"),
        ({"lr": -0.1}, "positive learning rate"),
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


def test_learning_rate_flags_and_file_reach_the_convnet_learner(tmp_path):
    """The base rate and the age-decayed schedule are daemon settings (flag or TOML), not only a benchmark's."""
    from gossipnet.cli import build_parser
    from gossipnet.commands.learner_factory import build_learner
    from gossipnet.commands.run import config_from_args

    base = ["run", "--state-dir", str(tmp_path), "--host", "127.0.0.1", "--net", "tiny", "--cores", "1"]
    learner = build_learner(config_from_args(build_parser().parse_args(base)), "node-a")
    assert learner.config.lr_schedule == "constant" and learner.optimizer.lr == learner.base_lr
    args = build_parser().parse_args(base + ["--lr-schedule", "age", "--lr-half-life", "64", "--lr", "0.004"])
    learner = build_learner(config_from_args(args), "node-a")
    assert (learner.config.lr_schedule, learner.config.lr_half_life_images, learner.base_lr) == ("age", 64, 0.004)
    learner.train(2)  # 64 images: the model's age is the half-life, so the rate is half
    assert learner.optimizer.lr == pytest.approx(0.002)
    f = tmp_path / "node.toml"
    f.write_text('lr-schedule = "age"\nlr_half_life = 1000\n')
    cfg = build_config(load_toml(f), {})
    assert (cfg.lr_schedule, cfg.lr_half_life) == ("age", 1000)
