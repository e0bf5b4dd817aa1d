"""The parity report: the same CNN compared across Keras backends (`python -m mnist_keras3.parity`).

report.py   the command: one subprocess per backend, then the comparison and parity.md/json
worker.py   what one backend's subprocess measures (imports keras: only after the backend is chosen)
compare.py  the comparisons, plain numpy (no keras), so the report runs without any backend
"""
