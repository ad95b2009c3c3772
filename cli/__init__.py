"""The ``prunegym`` command line: argparse wiring on top of every subsystem, one module per command family."""
