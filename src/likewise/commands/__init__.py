"""Sub-commands of the ``likewise`` CLI: one module each, with ``register(subparsers)``."""
