"""Long-running jobs: specs, the SQLite store, the supervisor that runs and resumes them, and
their HTTP routes. See ``docs/jobs.md``."""
