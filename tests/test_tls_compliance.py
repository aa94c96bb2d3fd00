"""sslyze checks a real server against Mozilla's "intermediate" TLS configuration."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.wire import PROJECT_DIR, ServerProcess

REQUIREMENTS = PROJECT_DIR / "requirements-tls-scan.txt"
SSLYZE_VENV = PROJECT_DIR / ".venv" / "sslyze"  # inside .venv, so never committed


@pytest.fixture(scope="session")
def sslyze() -> Path:
    """The Python of a venv holding the pinned sslyze, made (once) on first use.

    A venv of its own because sslyze pins an older cryptography than the project does; see
    requirements-tls-scan.txt. A failed install fails the test: it never skips.
    """
    python = SSLYZE_VENV / "bin" / "python"
    stamp = SSLYZE_VENV / ".installed"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(SSLYZE_VENV)], check=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(REQUIREMENTS)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert install.returncode == 0, f"could not install sslyze:\n{install.stderr[-3000:]}"
        stamp.write_text(digest)
    return python


def test_the_server_is_compliant_with_mozilla_intermediate(
    sslyze: Path, server: ServerProcess
) -> None:
    # The generated certificate is the CA file, as a client pins it; {127.0.0.1} makes sslyze
    # connect to the address the server listens on while checking the name "localhost".
    scan = subprocess.run(
        [str(sslyze), "-m", "sslyze", "--mozilla_config=intermediate",
         f"--certinfo_ca_file={server.cafile}", f"localhost:{server.port}{{127.0.0.1}}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    verdict = scan.stdout[scan.stdout.find("COMPLIANCE AGAINST") :]
    assert scan.returncode == 0, verdict or scan.stdout[-3000:] + scan.stderr[-2000:]
    assert f"localhost:{server.port}: OK - Compliant." in verdict, verdict
