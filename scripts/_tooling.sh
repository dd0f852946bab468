# Sourced by scripts/demo and scripts/test: puts nox and uv on PATH from a virtual environment
# of their own, .nox/tooling. Debian's own Python refuses `pip install` into the system
# (PEP 668, "externally-managed-environment"), and a plain CPython must not be changed either.
# Every step that fails stops the script with its own error message.

TOOLING_VENV="${AIOCELERYMON_TOOLING_VENV:-$PWD/.nox/tooling}"
PYTHON="${PYTHON:-python3}"

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python >= 3.11 (Debian: apt-get install python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" -V 2>&1) is too old: aiocelerymon needs Python >= 3.11"

if [ ! -x "$TOOLING_VENV/bin/nox" ] || [ ! -x "$TOOLING_VENV/bin/uv" ]; then
    # Debian ships venv's pip bootstrap (ensurepip) separately, in python3-venv.
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "$(basename "$0"): installing python3-venv (apt-get)" >&2
            apt-get update -qq || die "apt-get update failed"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                python3-venv >/dev/null || die "apt-get install python3-venv failed"
        else
            die "$PYTHON cannot create virtual environments: install python3-venv (Debian: apt-get install python3-venv)"
        fi
    fi
    rm -rf "$TOOLING_VENV"
    echo "$(basename "$0"): creating $TOOLING_VENV with nox and uv" >&2
    "$PYTHON" -m venv "$TOOLING_VENV" || die "could not create the virtual environment $TOOLING_VENV"
    "$TOOLING_VENV/bin/python" -m pip install -q --disable-pip-version-check 'nox>=2025.2.9' uv \
        || die "pip could not install nox and uv into $TOOLING_VENV (see its error above)"
fi
# nox finds uv (its venv backend) on PATH.
export PATH="$TOOLING_VENV/bin:$PATH"
