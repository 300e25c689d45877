from .checkpoint import DiskFullError
from .distributed import PeerLostError
from .engine import Hook, NonFiniteLossError, Objective, Progress, RunInterrupted, Trainer, WorkerLostError, write_json

__all__ = ["DiskFullError", "Hook", "NonFiniteLossError", "Objective", "PeerLostError", "Progress", "RunInterrupted",
           "Trainer", "WorkerLostError", "write_json"]
