"""Tables and figures from the stages' records, the paper's values and claims beside
ours. Nothing here imports torch (tests/test_imports.py)."""
