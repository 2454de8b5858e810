"""The runner: owns shards, holds their jobs in memory, runs handlers, writes outcomes."""

from .outcomes import TransitionCallback
from .runner import Runner

__all__ = ["Runner", "TransitionCallback"]
