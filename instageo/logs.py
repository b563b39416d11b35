"""What the runner and the CLI agree on about log records."""

# a log record's extra: for the run's log file, not the console (a failure's traceback)
FILE_ONLY = "file_only"
