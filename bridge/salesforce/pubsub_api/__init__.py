"""Salesforce's Pub/Sub API protocol (`eventbus.v1.PubSub`): the description and its generated modules.

`pubsub_api.proto` is written from Salesforce's documentation; `pubsub_api_pb2*.py` are generated from it by
`make proto` (grpcio-tools) and committed. Import the messages from `pubsub_api_pb2` and the stubs from
`pubsub_api_pb2_grpc`.
"""
