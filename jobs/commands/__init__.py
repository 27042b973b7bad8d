"""The `vigil` commands, one module each. Every module has `register(subparsers)`, which adds its parser and
sets `run` (the function the command line calls with the parsed arguments); `common` holds what they share."""
