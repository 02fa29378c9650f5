"""fastres.run: one training run's machinery (the loop, its parts assembled once, signals, NaN steps, bad
samples, the run folder, its lock and logs, resume); imports the config and every layer below it, never a
command.

  trainer      Trainer: the loop (data -> forward -> loss -> backward/reduce -> step -> log), validation every
               epoch; built from its parts and state, so stand-ins can drive it
  step         train_step: one optimizer step's micro-batches; NoLossScaling, the fp32/bf16 loss scaler
  state        TrainState: the loop's own state (step, best and last validation, attempt, a pending validation)
  validation   validate: top-1/top-5 over a validation loader, polling the stop signals (fastres.eval uses it)
  timing       StepTimer: the loop's one clock (epoch seconds, the log window's img/s, the estimate's rate)
  parts        RunParts: the loop's collaborators, and what they do for it (checkpoint, records, release)
  assembly     assemble: the parts built in order, each handed to the next
  restore      a checkpoint restored into the parts, and the TrainState the resumed attempt continues from
  resume       --resume auto|PATH: which checkpoint, which config, what changed between attempts
  attempts     what a resumed attempt lost to the one before: world sizes, steps and seconds lost
  execution    device, precision (autocast), memory format, seeds
  preemption   signals -> a checkpoint at the step every rank agrees on; the parent-death watch
  stepguard    NaN/Inf steps: found on the device, skipped on every rank, counted
  badsamples   undecodable samples met in training: pooled over ranks, listed, bounded
  runlog       the run folder: config.yaml, metrics.jsonl, the summary
  runlock      one job per run folder
  progress     a bar on a terminal, a line every N seconds in a log file; the estimate of the run's length
  console      stdout/stderr that fail (a log reader gone: EPIPE, EIO, closed) are dropped, never the run
  metrics      top-k counts, kept on the device
  tensorboard  the metrics as TensorBoard scalars
"""
