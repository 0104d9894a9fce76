"""The turn engine: what the driver means, from their words and the car's state."""
