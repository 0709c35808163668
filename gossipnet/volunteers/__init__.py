"""Browser volunteers: leases, validation and spot checks (sans-IO; docs/VOLUNTEERS.md)."""

from gossipnet.volunteers.config import REASONS, VolunteerConfig
from gossipnet.volunteers.desk import Pending, Refusal, TrainingSetup, VolunteerDesk

__all__ = ["REASONS", "Pending", "Refusal", "TrainingSetup", "VolunteerConfig", "VolunteerDesk"]
