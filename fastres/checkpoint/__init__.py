"""fastres.checkpoint: what a checkpoint holds, its checksummed file and a run folder's newest K; imports no
other fastres package (what a run resumes from, and with which config, is fastres.run.resume).

  fileformat   the checksummed file, written atomically, read as data only (weights_only)
  store        a run folder's checkpoints: the newest K, the newest that verifies, leftovers,
               the background saver
  saver        when a run saves: every epoch, every N steps or minutes, in the background
  state        what a checkpoint holds and how a run is restored from it
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
