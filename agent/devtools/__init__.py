"""Development tools beside the runtime (bench, demo, eval); the runtime never imports them."""
