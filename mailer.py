"""Email through an SMTP relay: the relay's address, a notice as a message, one send.

Only the standard library's smtplib and email speak SMTP and MIME here. Nothing in this module
logs a message body or the relay's password.
"""

from __future__ import annotations

import smtplib
import ssl
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formatdate

SCHEMES = {"smtp": "plain", "smtp+starttls": "starttls", "smtps": "tls"}
DEFAULT_PORTS = {"plain": 25, "starttls": 587, "tls": 465}


@dataclass(frozen=True)
class MailRelay:
    """Where mail goes: host, port, how the link is secured, and an optional login."""

    host: str
    port: int
    security: str  # plain, starttls or tls
    user: str = ""
    password: str = field(default="", repr=False)

    def describe(self) -> str:
        """The relay for a log line: never the password."""
        return f"{self.security} SMTP relay {self.host}:{self.port}"


def mail_relay(url: str) -> MailRelay:
    """The relay a --smtp-url names; ValueError with a sentence (never the password) if not."""
    parts = urllib.parse.urlsplit(url)
    security = SCHEMES.get(parts.scheme)
    if security is None or not parts.hostname:
        raise ValueError(
            "--smtp-url must look like smtp://host:25, smtp+starttls://user:password@host:587"
            " or smtps://host:465."
        )
    try:
        port = parts.port or DEFAULT_PORTS[security]
    except ValueError:
        raise ValueError("--smtp-url has a port that is not a number from 1 to 65535.") from None
    return MailRelay(
        host=parts.hostname,
        port=port,
        security=security,
        user=urllib.parse.unquote(parts.username or ""),
        password=urllib.parse.unquote(parts.password or ""),
    )


class PermanentMailError(Exception):
    """The relay refused this message for good (a 5xx answer): sending it again cannot help."""


class TemporaryMailError(Exception):
    """The relay could not be reached, or refused this server (its login, its sender): send
    again after a pause. Every message would fare the same just now."""


class MessageDeferredError(TemporaryMailError):
    """The relay put off this one message (a 4xx for its recipient or its data): send it
    again after a pause; the others need not wait."""


def message_id(notice_id: int, sender: str) -> str:
    """The Message-ID of a notice's email: the same each time that notice is sent."""
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<waymark-notice-{notice_id}@{domain}>"


def compose(
    notice_id: int, sender: str, to: str, subject: str, body: str, created: datetime
) -> EmailMessage:
    """A plain-text email of one notice."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    # One line: a title with a line break must neither fail the message nor add a header.
    message["Subject"] = " ".join(subject.split())
    message["Date"] = format_datetime(created) if created.tzinfo else formatdate(usegmt=True)
    message["Message-ID"] = message_id(notice_id, sender)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to a notice
    message.set_content(body)
    return message


def send(relay: MailRelay, message: EmailMessage, timeout_s: float = 30.0) -> None:
    """Hand one message to the relay.

    Raises PermanentMailError when the relay refuses it for good, TemporaryMailError when it
    should be tried again later.
    """
    context = ssl.create_default_context()
    try:
        if relay.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                relay.host, relay.port, timeout=timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(relay.host, relay.port, timeout=timeout_s)
        with client:
            if relay.security == "starttls":
                client.starttls(context=context)  # raises if the relay does not offer it
            if relay.user:
                client.login(relay.user, relay.password)
            _send_one(client, message)
    except (PermanentMailError, TemporaryMailError):
        raise
    except (OSError, smtplib.SMTPException) as error:
        # The relay itself: unreachable, gone, refusing this server's login or sender. A
        # relay that fails is tried again for 24 hours (PROTOCOL.md), whatever its code.
        raise TemporaryMailError(f"The relay did not serve us: {type(error).__name__}.") from None


def _send_one(client: smtplib.SMTP, message: EmailMessage) -> None:
    """Hand one message over a connected client; sort what the relay says of this message."""
    try:
        client.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        raise _by_code(min(codes), "The relay refused the recipient.") from None
    except smtplib.SMTPDataError as error:
        raise _by_code(error.smtp_code, f"The relay answered {error.smtp_code}.") from None
    except smtplib.SMTPNotSupportedError:
        # An address only SMTPUTF8 can carry, to a relay without it: it never will.
        raise PermanentMailError("The relay cannot take this address (no SMTPUTF8).") from None


def _by_code(code: int, text: str) -> Exception:
    # 5xx is final (no such mailbox, message refused); 4xx asks to try this one again later.
    return PermanentMailError(text) if 500 <= code < 600 else MessageDeferredError(text)
