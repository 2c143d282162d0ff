"""Log text never carries a password or token: the scrubbing of driver messages and DSNs."""

from __future__ import annotations

import pytest

from bridge.redact import MASK, first_line, scrub
from bridge.source.target import SourceTarget, failure_reason

SECRET = "s3cr3t p@ss/w:rd"  # space, @, / and : need quoting or %-encoding in every DSN form
ENCODED = "s3cr3t%20p%40ss%2Fw%3Ard"


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://bridge:{ENCODED}@db.internal:6543/scheduler",
        f"postgres://bridge:{ENCODED}@db.internal:6543/scheduler?sslmode=require",
        f"host=db.internal port=6543 dbname=scheduler user=bridge password='{SECRET}'",
        f"host=db.internal port=6543 dbname=scheduler user=bridge password = '{SECRET}' sslmode=require",
        f"postgresql://db.internal:6543/scheduler?user=bridge&password={ENCODED}",
    ],
    ids=["url", "url-query-opts", "key-value", "key-value-spaced", "url-password-param"],
)
def test_a_message_quoting_the_dsn_keeps_no_password(dsn: str) -> None:
    """However the DSN carries its password (URL, key=value, %-encoded), a message echoing it is masked."""
    message = f'invalid dsn: missing "=" after "{SECRET}" in connection info string\n\t{dsn}'
    reason = failure_reason(RuntimeError(message), dsn)
    assert SECRET not in reason and ENCODED not in reason
    assert "s3cr3t" not in reason
    assert MASK in reason and reason.startswith("invalid dsn")


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://bridge:{ENCODED}@db.internal:6543/scheduler",
        f"host=db.internal port=6543 dbname=scheduler user=bridge password='{SECRET}'",
    ],
    ids=["url", "key-value"],
)
def test_the_target_names_host_port_and_database_only(dsn: str) -> None:
    """The logged target is libpq's host, port and database, never the user or the password."""
    target = SourceTarget.of(dsn)
    assert target.log_fields() == {"host": "db.internal", "port": "6543", "database": "scheduler"}
    assert "s3cr3t" not in repr(target) and "bridge" not in repr(target)


def test_an_unparsable_dsn_is_named_so_and_leaks_nothing() -> None:
    """A DSN libpq cannot parse gives `unparsable` fields, not the DSN."""
    target = SourceTarget.of(f"host=db password {SECRET}")
    assert set(target.log_fields().values()) == {"unparsable"}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("could not connect: postgresql://u:hunter2@h/db refused", "hunter2"),
        ("connect failed for dbname=x password=hunter2 host=h", "hunter2"),
        ("connect failed for PASSWORD = 'hunter 2' host=h", "hunter 2"),
        ('login with password="hunter\\"2" refused', 'hunter\\"2'),
        ("ledger: mysql+x://root:hunter%402@h/db unreachable", "hunter%402"),
        ("Authorization: Bearer 00Dxx!AQ4AQ.token-value", "00Dxx!AQ4AQ.token-value"),
        ("token endpoint said access_token=00Dabc.def client_secret=xyz", "00Dabc.def"),
        ("token endpoint said access_token=00Dabc.def client_secret=xyz", "xyz"),
    ],
)
def test_password_looking_parts_are_masked_without_being_told(text: str, secret: str) -> None:
    """Pairs like password=..., a URL's user:password@, and bearer tokens are masked by their shape alone."""
    scrubbed = scrub(text)
    assert secret not in scrubbed and MASK in scrubbed


def test_the_first_line_of_the_reason_is_kept() -> None:
    """The reason is the message's first non-empty line; the hint lines libpq adds are dropped."""
    exc = OSError(
        '\nconnection to server at "127.0.0.1", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
    )
    assert first_line(exc) == 'connection to server at "127.0.0.1", port 1 failed: Connection refused'
    assert first_line(ValueError()) == "ValueError"
