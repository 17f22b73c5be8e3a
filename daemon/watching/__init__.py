"""Watching the inbox: when a job file is complete, iCloud placeholders, one worker per inbox."""
