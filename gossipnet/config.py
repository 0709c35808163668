"""A node's settings: one frozen dataclass, filled from defaults, a TOML file, then flags.

The CLI and the TOML file only fill these in; the node reads nothing else. Every key
of the TOML file is a field name below (dashes or underscores), so ``gossipnet run
--config node.toml`` and the flags of ``gossipnet run --help`` say the same things.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from gossipnet.errors import UserError

if TYPE_CHECKING:  # imported when asked for: `gossipnet --help` stays quick
    from gossipnet.gossip import GossipConfig
    from gossipnet.membership import MembershipConfig

DEFAULT_UDP_PORT = 7946  # memberlist's default gossip port: familiar to ops people
DEFAULT_HTTP_PORT = 8080


TRUST_MERGE = {"verify": "guarded", "members": "average"}  # --trust -> the convnet merge


@dataclass(frozen=True)
class NodeConfig:
    """Everything one node needs to run. Times are seconds."""

    state_dir: Path = field(default_factory=lambda: Path("~/.gossipnet/node").expanduser())
    # Network. ``host`` is the address sockets bind to; ``interface`` pins mDNS and is
    # what peers are told to use (defaults to ``host`` unless that is a wildcard).
    host: str = "0.0.0.0"
    interface: str | None = None
    udp_port: int = DEFAULT_UDP_PORT
    http_port: int = DEFAULT_HTTP_PORT
    peers: tuple[str, ...] = ()  # static seeds, "HOST:UDP_PORT", for where mDNS cannot reach
    mdns: bool = True
    preset: str = "lan"  # membership/gossip timing preset: "lan" or "local" (see gossip_config())
    # Swarm credentials (see docs/SECURITY.md).
    swarm_token: str | None = None
    cert: str | None = None
    allow: tuple[str, ...] = ()
    insecure_open: bool = False
    # What to train.
    learner: str = "convnet"  # "convnet" or "evolution"
    dataset: str = "embedded"
    data_dir: str | None = None
    net: str | None = None
    # Image folders (dataset "folder"): side in pixels and "auto", "grayscale" or "rgb";
    # None/auto: the net's, or from the pictures (docs/DATA.md).
    image_size: int | None = None
    color_mode: str = "auto"
    shards: int = 1
    shard: int = 0
    alpha: float | None = None  # Dirichlet label skew; None = IID shards
    task: str = "cartpole"
    # A node is an island: GA islands trading one migrant every 5 generations reached 200 on
    # LunarLander with 0.65 M env steps (median of 10 seeds) where CMA-ES islands needed 1.15 M
    # (docs/EVOLUTION.md); alone, CMA-ES and GA are alike, and `gossipnet train` uses CMA-ES.
    algo: str = "ga"
    seed: int | None = None  # None: derived from the node id, so nodes differ
    population: int | None = None  # members per island; None: the task's default
    # Merging.
    # How far this node trusts admitted members' snapshots (docs/SECURITY.md, "What a member
    # can still do"): "verify" checks every claim (the guarded merge), "members" believes them
    # (the plain age-weighted average: for a swarm of your own machines).
    trust: str = "verify"
    # "guarded" (age-weighted with a member's lies bounded), "average" (plain age-weighted)
    # or "clipped" (ClippedGossip, fixed radius); None: what --trust implies.
    merge: str | None = None
    clip_radius: float = 1.0
    # Cadence.
    train_chunk: int | None = None  # steps per worker call; None: the learner's (20 batches, 1 generation)
    # Seconds between snapshot announcements; None takes the preset's (GossipConfig.lan() 5 s,
    # .local() 0.5 s). Not membership's 0.2 s rumour interval (MembershipConfig.rumour_interval).
    announce_interval: float | None = None
    checkpoint_interval: float = 60.0
    eval_interval: float = 30.0
    max_steps: int | None = None  # stop training (but keep serving) after this many steps
    # Browser volunteers (docs/VOLUNTEERS.md): on by default, because a volunteer cannot harm
    # the model beyond a bounded share and every update is validated and spot-checked.
    volunteers: bool = True
    volunteer_steps: int = 8
    volunteer_spot_check_rate: float = 0.1
    volunteer_max_share: float = 0.5
    volunteer_leases_per_minute: float = 30.0
    # Training processes (data parallelism inside the node, gossipnet/nn/parallel.py);
    # None: every core this process may run on (os.sched_getaffinity).
    cores: int | None = None
    # A model to begin from on a fresh state directory (a ``gossipnet train --checkpoint``
    # file, a downloaded model.safetensors, another node's state dir); ignored on resume.
    start_from: str | None = None

    @property
    def merge_rule(self) -> str:
        """The convnet merge: --merge if given, else what --trust implies."""
        return self.merge or TRUST_MERGE[self.trust]

    def validate(self) -> "NodeConfig":
        """Raise UserError naming the first setting that cannot work."""
        for name in ("udp_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise UserError(f"--{name.replace('_', '-')} {port} is not a port (0-65535; 0 picks a free one)")
        if self.learner not in ("convnet", "evolution"):
            raise UserError(f"learner {self.learner!r} unknown: use 'convnet' or 'evolution'")
        if self.trust not in TRUST_MERGE:
            raise UserError(f"--trust {self.trust!r} unknown: use 'verify' (check every member's "
                            "snapshot) or 'members' (believe them: your own machines only)")
        if self.merge is not None and self.merge not in ("guarded", "average", "clipped"):
            raise UserError(f"--merge {self.merge!r} unknown: use 'guarded', 'average' or 'clipped'")
        if self.color_mode not in ("auto", "grayscale", "rgb"):
            raise UserError(f"--color-mode {self.color_mode!r} unknown: use auto, grayscale or rgb")
        if self.preset not in ("lan", "local"):
            raise UserError(f"--preset {self.preset!r} unknown: use 'lan' or 'local'")
        if self.shards < 1 or not 0 <= self.shard < self.shards:
            raise UserError(f"--shard {self.shard} must be in 0..{self.shards - 1} (--shards {self.shards})")
        if self.alpha is not None and self.alpha <= 0:
            raise UserError(f"--alpha {self.alpha} must be positive (smaller = more label skew)")
        if self.clip_radius <= 0:
            raise UserError(f"--clip-radius {self.clip_radius} must be positive")
        for name in ("announce_interval", "checkpoint_interval", "eval_interval"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive seconds")
        if self.cores is not None and self.cores < 1:
            raise UserError(f"--cores {self.cores} must be at least 1 (training processes)")
        if self.train_chunk is not None and self.train_chunk < 1:
            raise UserError("--train-chunk must be at least 1 step")
        if self.population is not None and self.population < 4:
            raise UserError(f"--population {self.population} is too small: an island needs at least 4 members")
        for peer in self.peers:
            parse_hostport(peer, what="--peer")
        if self.volunteer_steps < 1:
            raise UserError("--volunteer-steps must be at least 1")
        if not 0 <= self.volunteer_spot_check_rate <= 1:
            raise UserError("--volunteer-spot-check-rate must be between 0 and 1")
        if not 0 < self.volunteer_max_share < 1:
            raise UserError("--volunteer-max-share must be strictly between 0 and 1")
        if self.volunteer_leases_per_minute <= 0:
            raise UserError("--volunteer-leases-per-minute must be positive")
        return self

    def gossip_config(self) -> GossipConfig:
        """The preset's announce and pull settings, with ``announce_interval`` if given."""
        from gossipnet.gossip import GossipConfig

        base = GossipConfig.local() if self.preset == "local" else GossipConfig.lan()
        if self.announce_interval is None:
            return base
        return replace(base, announce_interval=float(self.announce_interval))

    def membership_config(self) -> MembershipConfig:
        from gossipnet.membership import MembershipConfig

        return MembershipConfig.local() if self.preset == "local" else MembershipConfig.lan()

    @property
    def advertised_host(self) -> str:
        """The address peers should use to reach us."""
        if self.interface:
            return self.interface
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host


def parse_hostport(text: str, *, what: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port), with an error that says the expected form."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise UserError(f"{what} {text!r} is not HOST:PORT (for example 192.168.1.20:{DEFAULT_UDP_PORT})")
    return host.strip("[]"), int(port)


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}
# Old setting names still read from files and flags: old name -> field.
RENAMED = {"gossip_interval": "announce_interval"}


def load_toml(path: str | os.PathLike) -> dict:
    """Read a config file into field overrides, rejecting unknown keys by name."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        name = RENAMED.get(name, name)
        if name not in _FIELDS:
            known = ", ".join(sorted(_FIELDS))
            raise UserError(f"config file {path}: unknown setting {key!r}; known settings: {known}")
        out[name] = value
    return out


def build_config(file_values: dict, flag_values: dict) -> NodeConfig:
    """Defaults, overridden by the file, overridden by flags that were given (not None)."""
    merged = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    kwargs = {}
    for name, value in merged.items():
        name = RENAMED.get(name, name)
        if name not in _FIELDS:
            raise UserError(f"unknown setting {name!r}")
        if name == "state_dir":
            value = Path(str(value)).expanduser()
        elif name in ("peers", "allow"):
            if isinstance(value, str):
                value = (value,)
            value = tuple(str(v) for v in value)
        kwargs[name] = value
    try:
        cfg = NodeConfig(**kwargs)
    except TypeError as exc:
        raise UserError(f"bad settings: {exc}") from None
    _check_types(cfg)
    return cfg.validate()


def _check_types(cfg: NodeConfig) -> None:
    for name, f in _FIELDS.items():
        value = getattr(cfg, name)
        kind = str(f.type)
        expected: tuple[type, ...]
        if kind.startswith("int"):
            expected = (int,)
        elif kind.startswith("float"):
            expected = (int, float)
        elif kind.startswith("bool"):
            expected = (bool,)
        elif kind.startswith("str"):
            expected = (str,)
        else:
            continue
        if value is None and "None" in kind:
            continue
        if not isinstance(value, expected) or (expected == (int,) and isinstance(value, bool)):
            raise UserError(f"setting {name!r} should be {kind}, got {value!r}")
