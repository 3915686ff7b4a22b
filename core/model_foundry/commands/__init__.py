"""One module per ``foundry`` command: ``add_parser(subparsers)`` and ``run(args) -> int``."""
