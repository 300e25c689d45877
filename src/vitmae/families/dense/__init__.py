"""What the dense families (segment, detect) share: the typed run record and the finished run rebuilt from
it. Each family is a sub-package; neither imports the other."""
from .record import DenseRecord, DetectRecord, SegmentRecord, find_record, read_record
from .run import DenseRun, load_dense_run, output_names

__all__ = ["DenseRecord", "DenseRun", "DetectRecord", "SegmentRecord", "find_record", "load_dense_run", "output_names",
           "read_record"]
