"""The ``m3dnca`` command line: the entry point and its commands (``main``), option types
(``options``), batches of cases with resume (``batch``), output files (``outputs``), the PNG
preview (``preview``), progress bars (``progress``), the benchmark (``bench``) and model
conversion (``official_command``).

Owns argument parsing, the process exit and the files written for the user.
May import every other part of ``nca_core``; nothing below imports it, except ``training``'s
commands, which reuse its option types and output folder check.
"""
