"""A local Salesforce org over real HTTP: OAuth, REST, Streaming API with Change Data Capture."""
