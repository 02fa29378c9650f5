"""fastres.tools: what the after-training commands (eval, predict, export, report) share: one-line errors and
exit codes, and a trained model loaded from a run folder or checkpoint; imports checkpoint, data and model.

  cli       ToolParser, run_tool: the tool's name as it was called, one-line usage errors, exit codes
  loading   a run folder's newest (or best) checkpoint -> model, classes, crop size
"""
