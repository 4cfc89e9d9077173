"""Stand-in sub-package; see ../README.md."""
