"""What the dense families (segment, detect) share: their run records. Each family is a sub-package;
neither imports the other."""
from .record import DenseRecord, DetectRecord, SegmentRecord

__all__ = ["DenseRecord", "DetectRecord", "SegmentRecord"]
