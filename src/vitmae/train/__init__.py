from .engine import Hook, NonFiniteLossError, Objective, Progress, RunInterrupted, Trainer, write_json

__all__ = ["Hook", "NonFiniteLossError", "Objective", "Progress", "RunInterrupted", "Trainer", "write_json"]
