"""The lifecycle controller: follows pods and their owners, reports how they stand against
the injection policies (status, events), and through its planner brings them up to date."""
