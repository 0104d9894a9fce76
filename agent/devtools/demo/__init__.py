"""`cabin-agent demo`, the simulated drive: what the driver says (script), the tunnel (scenes), what is
printed and summed up (report), and the run through the real voice loop and services (drive)."""
