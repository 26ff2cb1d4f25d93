"""Access to the Kubernetes API: client loading, error text, the namespace label cache."""
