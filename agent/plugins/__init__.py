"""The car's tools (vehicle, meals, deliveries), found through the `cabin_agent.plugins` entry points."""
