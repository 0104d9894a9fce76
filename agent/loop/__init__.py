"""The voice loop: wake, listen, understand, speak (pipeline.py), over the stages it loads (stages.py)."""
