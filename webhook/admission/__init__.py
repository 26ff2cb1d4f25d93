"""The admission webhook: wire format, the admit step, the decision memo, the aiohttp app."""
