"""What every part shares: the decision and finding types, the request model, tolerant accessors."""
