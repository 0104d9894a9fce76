"""The leaf layer everything rests on: config, typed errors, logging, events and the monotonic clock."""
