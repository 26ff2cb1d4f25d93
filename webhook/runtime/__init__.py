"""What every long-running process shares: workers, file watching, logs, metrics, TLS, memory settings."""
