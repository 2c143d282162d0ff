"""`[sync] transport`, `pubsub_endpoint` and `pubsub_plaintext`: defaults, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigurationError


def test_the_default_transport_is_cometd_with_salesforces_pubsub_endpoint_over_tls() -> None:
    """Without the keys: CometD, and for Pub/Sub Salesforce's documented endpoint, TLS on."""
    sync = load_settings(None, environ={}).sync
    assert (sync.transport, sync.pubsub_endpoint, sync.pubsub_plaintext) == (
        "cometd",
        "api.pubsub.salesforce.com:7443",
        False,
    )


def test_pubsub_and_an_emulator_endpoint_are_taken_from_file_and_environment(tmp_path: Path) -> None:
    """The file chooses Pub/Sub; the environment points it at a plaintext local port."""
    cfg = tmp_path / "b.toml"
    cfg.write_text('[sync]\ntransport = "pubsub"\n')
    env = {
        "MOGLI_BRIDGE_SYNC__PUBSUB_ENDPOINT": "localhost:50051",
        "MOGLI_BRIDGE_SYNC__PUBSUB_PLAINTEXT": "true",
    }
    sync = load_settings(cfg, environ=env).sync
    assert (sync.transport, sync.pubsub_endpoint, sync.pubsub_plaintext) == (
        "pubsub",
        "localhost:50051",
        True,
    )


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('transport = "grpc"', "sync.transport"),
        ('transport = "CometD "', "sync.transport"),
        ('pubsub_endpoint = "https://api.pubsub.salesforce.com:7443"', "sync.pubsub_endpoint"),
        ('pubsub_endpoint = "api.pubsub.salesforce.com"', "sync.pubsub_endpoint"),
        ('pubsub_endpoint = "api.pubsub.salesforce.com:port"', "sync.pubsub_endpoint"),
        ('pubsub_endpoint = ":7443"', "sync.pubsub_endpoint"),
        ('pubsub_endpoint = "h:70000"', "sync.pubsub_endpoint"),
        ('pubsub_plaintext = "maybe"', "sync.pubsub_plaintext"),
    ],
)
def test_a_bad_transport_setting_is_refused_naming_its_key(tmp_path: Path, toml: str, key: str) -> None:
    """Each malformed value is a configuration error (exit 2 at start) that names its key."""
    cfg = tmp_path / "b.toml"
    cfg.write_text(f"[sync]\n{toml}\n")
    with pytest.raises(ConfigurationError) as err:
        load_settings(cfg, environ={})
    assert err.value.key == key and key in str(err.value)
