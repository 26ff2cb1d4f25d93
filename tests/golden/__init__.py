"""Golden answers: the behaviour of the server and of the offline CLI, pinned byte for byte.

`python -m tests.golden.regenerate` (or `make golden`) records them; `tests/test_golden.py`
compares. A change to a golden file is a change of behaviour: regenerate deliberately and
review the diff (docs/operations.md, "Golden answers").
"""
