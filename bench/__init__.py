"""The benchmark of the webhook against a no-op baseline (bench/README.md).

    run.py       the command line's entry point: the phases in order, then the report
    settings.py  the command line and the short mode (--quick)
    targets.py   every target, in one place (the docs' table is generated from it)
    corpus.py    request bodies (the repeat and never-seen mixes) and policy directories
    servers.py   the webhook and the baseline as subprocesses, the checks made on them
    load.py      the load generator (wrk or pyload.py) and interleaved measurement
    proc.py      what is read of processes from /proc: CPU time, memory
    inprocess.py CPU per review in process
    phases.py    the phases of a run, each returning what it measured
    report.py    the printed report and the run's JSON
    hostile.py   hostile inputs against a fresh worker each (make bench-hostile), apart from the run
    hostile_bodies.py  its request bodies
"""
