from .checkpoint import DiskFullError
from .distributed import PeerLostError
from .hooks import Hook
from .engine import NonFiniteLossError, Objective, Progress, RunInterrupted, Trainer, WorkerLostError, write_json

__all__ = ["DiskFullError", "Hook", "NonFiniteLossError", "Objective", "PeerLostError", "Progress", "RunInterrupted",
           "Trainer", "WorkerLostError", "write_json"]
