"""A node's side of the volunteer desk: whether it takes volunteers, and what crosses
between the desk and the learner.

``node.py`` only awaits; the decisions around the desk live here, sans-IO like the desk:
which nodes open one (a convnet node with ``--volunteers on``), what passes between the
desk and the learner between training chunks (in the learner's worker thread, called by
``LearnerHost.work``), and how the desk's refusals join the node's record of rejections.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from gossipnet.errors import UserError
from gossipnet.volunteers.config import REASONS, VolunteerConfig
from gossipnet.volunteers.desk import TrainingSetup, VolunteerDesk

if TYPE_CHECKING:
    from gossipnet.config import NodeConfig
    from gossipnet.learners.base import Learner
    from gossipnet.rejections import Rejections

log = logging.getLogger(__name__)


def volunteer_desk(cfg: NodeConfig, learner: Learner, rng: random.Random) -> VolunteerDesk | None:
    """Browser volunteers' desk for a convnet node (``--volunteers on``), else None.

    ``rng`` gives the desk its seed; it is drawn from only when a desk is made, so a node
    without volunteers draws its core's random streams exactly as before.
    """
    if not cfg.volunteers or learner.kind != "convnet":
        return None
    vcfg = VolunteerConfig(steps=cfg.volunteer_steps, spot_check_rate=cfg.volunteer_spot_check_rate,
                           max_share=cfg.volunteer_max_share, leases_per_minute=cfg.volunteer_leases_per_minute)
    try:
        return VolunteerDesk(vcfg, TrainingSetup.of(learner), seed=rng.getrandbits(32))
    except UserError as exc:
        log.warning("browser volunteers are off: %s", exc)
        return None


def trade(desk: VolunteerDesk, learner: Any, now: float) -> None:
    """Merge the accepted volunteer updates and offer volunteers the new weights.

    Runs in the learner's worker thread between chunks, never while the learner trains
    (the learner is not thread-safe).
    """
    for delta, images in desk.take_accepted(learner.trainer.images):
        learner.add_delta(delta, images)
    desk.offer_version(learner.net.params(), learner.optimizer.state_dict(), learner.trainer.images, now)


def volunteer_counters(desk: VolunteerDesk, rejections: Rejections | None, now: float) -> dict[str, Any]:
    """The desk's status-page counters; its refusals join ``rejections`` (stage ``volunteer``)
    with every reason, zeros included, so Prometheus ``rate()`` sees each series from the start."""
    counters = desk.status(now)
    if rejections is not None:
        refused = desk.refused
        rejections.set_totals("volunteer", {r: refused.get(r, 0) for r in REASONS})
    return counters
