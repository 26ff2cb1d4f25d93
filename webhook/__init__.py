"""Pod runtime admission webhook: injects runtime support into pods and validates them."""

__version__ = "0.1.0"
