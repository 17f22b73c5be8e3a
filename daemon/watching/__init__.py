"""Watching the inbox: which names are jobs, when a job file is complete, one worker per inbox."""
