"""The daemon's stages: ingest (source to ledger), push (ledger to Salesforce), inbound (Salesforce to
ledger and scheduler), reconcile and repair; each depends only on the ports in `ports.py`."""
