"""The rules (pure mapping and policy) and the pipeline stages that drive source, ledger and Salesforce."""
