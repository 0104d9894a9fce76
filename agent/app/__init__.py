"""The app: wiring (the assistant from the config), the daemon, the control socket, health and sd_notify."""
