"""The `webhook` command line: commands, offline admission, policy tests, report."""
