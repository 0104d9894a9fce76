"""What several test files share: fakes of the stages and the model, fake clocks, waiting, a test systemd."""
