from .engine import Hook, NonFiniteLossError, Objective, Progress, RunInterrupted, Trainer, write_json
from .distributed import PeerLostError

__all__ = ["Hook", "NonFiniteLossError", "Objective", "PeerLostError", "Progress", "RunInterrupted", "Trainer",
           "write_json"]
