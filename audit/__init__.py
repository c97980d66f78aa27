"""regate's audit tools: explain, matrix, diff, and the bundle checks (DESIGN.md §10).

Every answer is OPA's own evaluation of the compiled bundle; see evaluate.py.
"""

MIN_COVERAGE = 100.0  # percent of the policy's lines the generated tests must evaluate
