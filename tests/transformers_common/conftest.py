# The vendored modules are named test_*.py (as upstream) but hold only mixins and helpers, no tests:
# keep pytest from collecting them when it walks tests/.
collect_ignore_glob = ["test_*.py", "*/test_*.py"]
