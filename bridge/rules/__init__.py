"""Pure rules: mapping, Salesforce-side policy, drift, push outcomes, backfill. No clock, no I/O: every input
is a record or an argument."""
