"""PostgreSQL logical replication source: set-up, the pgoutput decoder, and the asyncio reader.

The only owner of LSN semantics: everything past this package speaks `bridge.records` types.
"""
