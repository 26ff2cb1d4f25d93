"""Policy files: the schema (model), reading and validating a directory (loader), and
the holder the server reads the current set from (holder)."""
