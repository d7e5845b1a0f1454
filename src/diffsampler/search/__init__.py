"""Searchers and the replay buffer they fill."""
from .buffer import ReplayBuffer

__all__ = ["ReplayBuffer"]
