"""fsguard's operator commands: the `fsguard` CLI, demo, replay, capture, top."""
