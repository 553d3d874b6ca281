"""Subcommands of the ``rehearse`` CLI, one module each (``train_simulator`` ->
``train-simulator``).

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""
