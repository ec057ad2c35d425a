"""The ``srkd`` command line: one module per sub-command, imported only when that command runs."""
