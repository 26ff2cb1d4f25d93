"""The lifecycle controller: watches pods and their owners, reports how they stand against the policies, and (through its planner) brings them up to date."""
