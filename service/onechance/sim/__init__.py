"""A simulated call centre speaking the AMI of a real Asterisk 22 (see ``docs/simulator.md``).

``Centre(SimConfig.default(seed=1)).messages()`` is an endless, reproducible stream of AMI messages
exactly like the shared captures'; ``Centre.truths`` holds the journey every generated call must have.
"""

from .centre import BANNER, Centre
from .model import (
    Behaviour,
    CallerPool,
    OperatorSpec,
    QueueSpec,
    RateProfile,
    SimConfig,
    SimConfigError,
)
from .truth import CallTruth

__all__ = [
    "BANNER", "Behaviour", "CallTruth", "CallerPool", "Centre", "OperatorSpec", "QueueSpec", "RateProfile",
    "SimConfig", "SimConfigError",
]
