"""Certificates: development and bootstrap pairs, and `install-ca` on the cluster's Secrets."""
