"""Checkpoints: what they hold (state), how they are stored (fileformat, store), how a run resumes (resume).

fileformat   the checksummed file, written atomically, read as data only (weights_only)
store        a run folder's checkpoints: the newest K, the newest that verifies, leftovers,
             the background saver
state        what a checkpoint holds and how a run is restored from it
resume       --resume auto|PATH: which checkpoint, which config, what changed between attempts
"""

from fastres.checkpoint.fileformat import CheckpointError, read_checkpoint_file, write_checkpoint_file
from fastres.checkpoint.state import restore_run, run_state
from fastres.checkpoint.store import CHECKPOINT_DIR, BackgroundSaver, CheckpointStore

__all__ = [
    "CHECKPOINT_DIR",
    "BackgroundSaver",
    "CheckpointError",
    "CheckpointStore",
    "read_checkpoint_file",
    "restore_run",
    "run_state",
    "write_checkpoint_file",
]
