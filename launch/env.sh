# Sourced by the launch scripts: creates (once) and activates the project's virtual environment.
#
# jax >= 0.11 needs Python >= 3.12. The interpreter is, in order: $LENGGEN_PYTHON; python3.13 or
# python3.12 if they run; the newest 3.12+/3.13+ under pyenv; python3 if it is new enough.
# The environment lives in $LENGGEN_VENV (default: .venv in the repository) and is reinstalled
# when setup.py changes.

_lenggen_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LENGGEN_VENV="${LENGGEN_VENV:-$_lenggen_root/.venv}"

_lenggen_is_new_enough() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

_lenggen_find_python() {
  local candidate
  for candidate in "${LENGGEN_PYTHON:-}" python3.13 python3.12; do
    if [ -n "$candidate" ] && _lenggen_is_new_enough "$candidate"; then
      echo "$candidate"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for candidate in $(ls -d "$(pyenv root)"/versions/3.1[2-9]* 2>/dev/null | sort -rV); do
      if _lenggen_is_new_enough "$candidate/bin/python"; then
        echo "$candidate/bin/python"; return 0
      fi
    done
  fi
  if _lenggen_is_new_enough python3; then
    echo python3; return 0
  fi
  echo "lenggen needs Python >= 3.12 (jax >= 0.11 does). Install one (e.g. 'pyenv install 3.12')" \
       "or point LENGGEN_PYTHON at it." >&2
  return 1
}

_lenggen_setup() {
  local stamp="$LENGGEN_VENV/.lenggen-installed"
  local wanted
  wanted="$(cat "$_lenggen_root/setup.py" | cksum)"
  if [ ! -x "$LENGGEN_VENV/bin/python" ]; then
    local python
    python="$(_lenggen_find_python)" || return 1
    echo "Creating $LENGGEN_VENV with $("$python" --version 2>&1)."
    "$python" -m venv "$LENGGEN_VENV" || return 1
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "Installing lenggen and its dependencies into $LENGGEN_VENV (about a minute)."
    "$LENGGEN_VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    # pip's chatter (mirror warnings, build-backend notices) goes to a log shown on failure.
    local log="$LENGGEN_VENV/pip-install.log"
    if ! "$LENGGEN_VENV/bin/python" -m pip install --quiet -e "$_lenggen_root[test]" \
        >"$log" 2>&1; then
      grep -v "^WARNING: Location .* is ignored" "$log" >&2
      return 1
    fi
    echo "$wanted" > "$stamp"
  fi
}

_lenggen_setup || { echo "lenggen: environment setup failed." >&2; return 1 2>/dev/null || exit 1; }
# shellcheck disable=SC1091
source "$LENGGEN_VENV/bin/activate"
