"""`cabin-agent bench`, by concern: the run and its phases (runner), the spoken script and its turns (script,
turns), our layers vs the bare engines (overhead), child processes (children), the machine and /proc
(machine), the arithmetic (stats), understanding, and what is written (report, plots)."""
