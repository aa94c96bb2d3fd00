# Sourced by scripts/run and scripts/test: make .venv and install the pinned requirements
# when they changed. Needs only python3 (3.11 or newer).
ensure_venv() {
    local requirements="$1"
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "Waymark needs Python 3.11 or newer: install python3 (e.g. apt-get install python3 python3-venv)." >&2
        exit 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "Waymark needs Python 3.11 or newer; $("$python" --version 2>&1) was found." >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "Creating the virtual environment in .venv ..." >&2
        "$python" -m venv .venv || {
            echo "Could not create a venv: install python3-venv (apt-get install python3-venv)." >&2
            exit 1
        }
    fi
    local stamp=".venv/.installed-$(basename "$requirements")"
    local digest
    # Every requirements file counts: the named one may include the others with -r.
    digest=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        echo "Installing the pinned requirements ($requirements) ..." >&2
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$digest" > "$stamp"
    fi
}
