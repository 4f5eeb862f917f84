"""The ``m3dnca`` command line: the entry point and the segment commands (``main``), the training
commands (``training``), option types (``options``), batches of cases with resume (``batch``),
output files (``outputs``), the PNG preview (``preview``, with a whole head's ``overview``), progress
bars (``progress``), the benchmark (``bench``), model conversion (``official_command``) and a
cohort's cases on Dask workers (``cluster``, the optional extra ``m3dnca[cluster]``).

Owns argument parsing, messages, the process exit and the files written for the user. The top
floor: may import every other part of ``nca_core``; nothing in ``nca_core`` imports it.
"""
