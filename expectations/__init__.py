"""Data-quality suites as code, one module per raw table (STYLE rule 8).

Each module defines the table's row rules once. The same rule object gives the Spark condition that
routes a row to quarantine and the Great Expectations expectation that re-checks the rows kept, so the
quarantine split and the suite can never disagree.
"""
