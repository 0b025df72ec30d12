"""Downstream evaluation: task data built offline, run through lm-evaluation-harness.

``data``: task data and lm-eval task YAMLs from DDTP and the user's held-out text;
``harness``: runs the tasks on HF exports (and Megatron checkpoints, exported first);
``report``: the table, JSON and before/after plot.
"""
