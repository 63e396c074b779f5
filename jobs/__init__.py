"""YAML job specs, the runs behind `flashbeam run`, and the example jobs (`*.yaml`, `data/`).

    spec.py       JobSpec (pydantic) and `load_job` with `--set` overrides
    run.py        plan -> check -> run into staging -> manifest -> finalize
    partition.py  output directories replaced whole (staging, then finalize)
    manifest.py   manifest.json: counts, tokens, cost
    parquet_files.py  reading the results and errors files back
    progress.py   the live progress bar and the summary
    show.py       Parquet rows as a terminal table
    eval.py       field accuracy against gold records

This package file imports nothing heavy: the command line reads the exit codes from here.
"""

EXIT_OK = 0  # every input ended as a valid result row
EXIT_FAILED = 1  # the run failed (nothing written) or its counts did not reconcile
EXIT_SETUP = 2  # bad spec or setup; nothing ran
EXIT_ERROR_ROWS = 3  # the job completed and some inputs ended as error rows
