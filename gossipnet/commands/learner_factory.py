"""Build the learner a NodeConfig asks for: the only place that knows every learner kind.

It lives beside the commands that use it (`run`, `demo`) because it is application wiring:
it reads settings and data sets, which the learners themselves never do.
"""

from __future__ import annotations

import hashlib

from gossipnet.config import NodeConfig
from gossipnet.learners.base import Learner


def node_seed(cfg: NodeConfig, node_id: str) -> int:
    """The configured seed, or one derived from the node id so nodes explore differently."""
    if cfg.seed is not None:
        return cfg.seed
    return int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:4], "big")


def build_learner(cfg: NodeConfig, node_id: str, data=None) -> Learner:
    """``data``: an already loaded Dataset to share (the demo's nodes), else cfg's is loaded."""
    seed = node_seed(cfg, node_id)
    sizes = {} if cfg.population is None else {"population": cfg.population}
    if cfg.learner == "evolution" and cfg.task == "slimevolley":
        from gossipnet.learners.selfplay import SelfPlayConfig, SelfPlayLearner

        return SelfPlayLearner(SelfPlayConfig(seed=seed, algo=cfg.algo or "ga", **sizes), name=node_id)
    if cfg.learner == "evolution":
        from gossipnet.learners.evolution import EvolutionConfig, EvolutionLearner

        return EvolutionLearner(EvolutionConfig.for_task(cfg.task, cfg.algo, seed=seed, **sizes))
    from gossipnet.data import shard
    from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner, default_net_for

    if data is None:
        data = load_data(cfg.dataset, cfg.data_dir, cfg.net, cfg.image_size, cfg.color_mode)
    indices = None
    if cfg.shards > 1:
        # The shard layout must agree across nodes, so its seed is fixed, not per node.
        indices = shard(data.y_train, cfg.shards, cfg.shard, alpha=cfg.alpha, seed=0)
    from gossipnet.nn.parallel import available_cores

    conv = ConvnetConfig(net=cfg.net or default_net_for(data), seed=seed, merge=cfg.merge_rule,
                         clip_radius=cfg.clip_radius, cores=cfg.cores or available_cores(),
                         lr_schedule=cfg.lr_schedule, lr_half_life_images=cfg.lr_half_life, lr=cfg.lr)
    return ConvnetLearner(data, indices, conv)


def load_data(dataset: str, data_dir, net: str | None = None, image_size: int | None = None,
              color_mode: str | None = None, test_fraction: float | None = None):
    """Load a data set; for an image folder, a named preset fixes the colour mode and the side
    unless they are given (without one, both come from the pictures: see data/folder.py)."""
    from gossipnet.data import load_dataset
    from gossipnet.errors import UserError
    from gossipnet.nn import get_preset

    if dataset != "folder":
        if image_size is not None or color_mode not in (None, "auto") or test_fraction is not None:
            raise UserError("image size, colour mode and test fraction apply to the folder data set only")
        return load_dataset(dataset, data_dir)
    if net and color_mode in (None, "auto"):
        preset = get_preset(net)
        color_mode = "grayscale" if preset.input_shape[0] == 1 else "rgb"
        image_size = image_size or preset.input_shape[1]
    return load_dataset("folder", data_dir, image_size=image_size, color_mode=color_mode or "auto",
                        test_fraction=test_fraction)
