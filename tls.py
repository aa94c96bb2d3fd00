"""TLS contexts for both ends, with the self-signed leaf certificate made on first start."""

from __future__ import annotations

import _ssl
import ctypes
import datetime
import ipaddress
import logging
import os
import re
import ssl
import sys
import sysconfig
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

# Mozilla "intermediate" TLS 1.2 suites: ECDHE key exchange with AEAD ciphers only.
# (TLS 1.3 suites are all AEAD and are not affected by set_ciphers.)
MOZILLA_INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
SERVER_CURVES = "X25519:prime256v1:secp384r1"
_SSL_CTRL_SET_GROUPS_LIST = 92  # from OpenSSL's ssl.h
# Mozilla's intermediate profile allows a leaf at most 366 days (and the CA/Browser Forum is
# going further down); 365 keeps a yearly renewal, which README explains.
CERT_VALIDITY = datetime.timedelta(days=365)
RENEW_WARNING = datetime.timedelta(days=30)  # the server warns at start with less than this left
SERVER_NAMES = ("localhost",)
SERVER_ADDRESSES = ("127.0.0.1", "::1")
# A DNS name: dot-separated labels of letters, digits and inner hyphens (a leading * allowed).
_HOST_NAME = re.compile(
    r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)


class CertificateError(ValueError):
    """The certificate or key cannot be made or used; the text is one sentence naming the file."""


def parse_hosts(text: str) -> tuple[str, ...]:
    """Host names and IP addresses from a comma-separated list; ValueError names a bad one."""
    hosts = tuple(part.strip() for part in text.split(",") if part.strip())
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOST_NAME.fullmatch(host):
                raise ValueError(
                    f"--cert-hosts: {host!r} is neither a host name nor an IP address."
                ) from None
    return hosts


def ensure_certificate(
    cert_path: Path,
    key_path: Path,
    validity: datetime.timedelta = CERT_VALIDITY,
    extra_hosts: tuple[str, ...] = (),
) -> bool:
    """Create a self-signed leaf certificate and key unless both exist; True if created.

    extra_hosts (names or IP addresses) join localhost, 127.0.0.1 and ::1 in its SAN. An
    existing certificate is never replaced (clients pin it); a name it lacks is warned about.

    Raises CertificateError when only one of them exists (never overwrite the other: clients
    pin the certificate) or when they cannot be written.
    """
    if cert_path.exists() and key_path.exists():
        _warn_missing_hosts(cert_path, extra_hosts)
        return False
    for present, missing in ((cert_path, key_path), (key_path, cert_path)):
        if present.exists():
            raise CertificateError(
                f"{present} exists but {missing} does not; restore it, or move {present.name}"
                " away to have a new pair made (clients must then pin the new certificate)."
            )
    try:
        _write_pair(cert_path, key_path, validity, extra_hosts)
    except OSError as error:
        raise CertificateError(
            f"Could not create the certificate {cert_path} and key {key_path}: {error.strerror}."
        ) from error
    log.info("created a self-signed certificate at %s", cert_path)
    return True


def _write_pair(
    cert_path: Path, key_path: Path, validity: datetime.timedelta, extra_hosts: tuple[str, ...]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed_leaf(key, validity, extra_hosts)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Create the key file 0600 from the start so it is never readable by others.
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(key_bytes)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def time_left(cert_path: Path, now: datetime.datetime | None = None) -> datetime.timedelta:
    """How long the certificate at cert_path stays valid (negative once it has expired)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.not_valid_after_utc - (now or datetime.datetime.now(datetime.UTC))


def _san(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _warn_missing_hosts(cert_path: Path, hosts: tuple[str, ...]) -> None:
    if not hosts:
        return
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        present = x509.SubjectAlternativeName([])
    missing = [name for name in _san(hosts) if name not in present]
    if missing:
        log.warning(
            "the certificate %s does not name %s (--cert-hosts applies only to a certificate"
            " the server makes: move the old pair away to have a new one made)",
            cert_path,
            ", ".join(str(name.value) for name in missing),
        )


def _self_signed_leaf(
    key: ec.EllipticCurvePrivateKey, validity: datetime.timedelta, extra_hosts: tuple[str, ...]
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Waymark"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public_key = key.public_key()
    alt_names = _san((*SERVER_NAMES, *SERVER_ADDRESSES, *extra_hosts))
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
        # A leaf, not a CA: scanners reject a CA:TRUE server certificate.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        # Python 3.13's strict verification refuses a certificate without an AKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, Mozilla intermediate ciphers and curves."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MOZILLA_INTERMEDIATE_CIPHERS)
    _limit_curves(context)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as error:
        raise CertificateError(_why_unusable(cert_path, key_path, error)) from error
    return context


def _why_unusable(cert_path: Path, key_path: Path, error: Exception) -> str:
    # OpenSSL says only "PEM lib"; find out which file is at fault, and how.
    for path, kind, parse in (
        (cert_path, "certificate", x509.load_pem_x509_certificate),
        (key_path, "key", lambda data: serialization.load_pem_private_key(data, password=None)),
    ):
        try:
            data = path.read_bytes()
        except OSError as read_error:
            return f"The TLS {kind} {path} cannot be read: {read_error.strerror}."
        try:
            parse(data)
        except (ValueError, TypeError):
            return f"The TLS {kind} {path} is not a PEM {kind} (without a passphrase)."
    if isinstance(error, ssl.SSLError) and "KEY_VALUES_MISMATCH" in str(error).upper():
        return f"The TLS key {key_path} does not belong to the certificate {cert_path}."
    return f"The TLS certificate {cert_path} and key {key_path} cannot be used: {error}."


def _limit_curves(context: ssl.SSLContext) -> None:
    # Python has no public API for a curve list before 3.13's set_groups; ask OpenSSL directly
    # through the context's SSL_CTX so secp521r1 and X448 are not offered.
    set_groups = getattr(context, "set_groups", None)
    if set_groups is not None:
        set_groups(SERVER_CURVES)
        return
    if not _can_reach_ssl_ctx():
        log.warning("cannot restrict TLS curves on this Python; OpenSSL's defaults apply")
        return
    library = ctypes.CDLL(_ssl.__file__)
    ctx_pointer = _ssl_ctx_pointer(context)
    result = library.SSL_CTX_ctrl(
        ctypes.c_void_p(ctx_pointer),
        _SSL_CTRL_SET_GROUPS_LIST,
        ctypes.c_long(0),
        ctypes.c_char_p(SERVER_CURVES.encode()),
    )
    if result != 1:
        raise ssl.SSLError("could not restrict the TLS key exchange groups")


def _can_reach_ssl_ctx() -> bool:
    # The pointer arithmetic below holds for a standard CPython build with _ssl as a shared
    # library; free-threaded and trace-refs builds have a different object header.
    standard_header = not sysconfig.get_config_var("Py_GIL_DISABLED") and not hasattr(
        sys, "getobjects"
    )
    return sys.implementation.name == "cpython" and standard_header and hasattr(_ssl, "__file__")


def _ssl_ctx_pointer(context: ssl.SSLContext) -> int:
    # PySSLContext is {PyObject_HEAD; SSL_CTX *ctx; ...}: the pointer follows the object header.
    header = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)
    return ctypes.c_void_p.from_address(id(context) + header).value or 0


def client_context(cafile: Path) -> ssl.SSLContext:
    """A client context that trusts only the pinned server certificate and checks the name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode=CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(cafile))
    # The pinned certificate is a self-signed leaf, not a CA: let it anchor the chain itself.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
