"""The pieces of validation: the target pod (target), rule runners (rules), exceptions
(exceptions) and how violations become a decision (report). `webhook.engine.validate`
puts them together."""
