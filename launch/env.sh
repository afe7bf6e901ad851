# Sourced by the launch scripts: creates (once) and activates the project's virtual environment.
#
# jax >= 0.11 needs Python >= 3.12. The interpreter is, in order: $LENGGEN_PYTHON; python3.13 or
# python3.12 if they run; the newest 3.12+/3.13+ under pyenv; python3 if it is new enough.
# The environment lives in $LENGGEN_VENV (default: .venv in the repository). It installs the
# pinned versions of requirements/lock.txt (pip constraints; launch/lock.sh writes it), plus
# requirements/$LENGGEN_ACCELERATOR.txt for LENGGEN_ACCELERATOR=tpu or cuda12 (default cpu:
# nothing more), and is reinstalled when setup.py, the lock or the accelerator changes.
# Jobs that start together (a SLURM array, the workers of a TPU VM sharing a home) build it
# once: the install runs under an exclusive lock (flock) on $LENGGEN_VENV.lock.

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

_lenggen_requirements() {  # pip arguments: the lock as constraints, the accelerator's pins
  local accelerator="${LENGGEN_ACCELERATOR:-cpu}"
  echo "-c $_lenggen_root/requirements/lock.txt"
  case "$accelerator" in
    cpu) ;;
    tpu|cuda12) echo "-r $_lenggen_root/requirements/$accelerator.txt" ;;
    *) echo "LENGGEN_ACCELERATOR=$accelerator: expected cpu, tpu or cuda12." >&2; return 1 ;;
  esac
}

_lenggen_setup() {
  local requirements
  requirements="$(_lenggen_requirements)" || return 1
  if command -v flock >/dev/null 2>&1; then
    # One builder at a time; the others wait, then find the stamp and install nothing.
    mkdir -p "$(dirname "$LENGGEN_VENV")"
    (
      flock -x 9 || exit 1
      _lenggen_install "$requirements"
    ) 9>"$LENGGEN_VENV.lock"
  else
    _lenggen_install "$requirements"
  fi
}

_lenggen_install() {
  local requirements="$1"
  local stamp="$LENGGEN_VENV/.lenggen-installed"
  local wanted
  # shellcheck disable=SC2086
  wanted="$(cat "$_lenggen_root/setup.py" $(echo "$requirements" | awk '{print $2}') \
            | cksum) ${LENGGEN_ACCELERATOR:-cpu}"
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
    # shellcheck disable=SC2086
    if ! "$LENGGEN_VENV/bin/python" -m pip install --quiet $requirements \
        -e "$_lenggen_root[test]" >"$log" 2>&1; then
      grep -v "^WARNING: Location .* is ignored" "$log" >&2
      return 1
    fi
    echo "$wanted" > "$stamp"
  fi
}

[ "${LENGGEN_ENV_FUNCTIONS_ONLY:-0}" = 1 ] && return 0  # launch/lock.sh: the functions only
_lenggen_setup || { echo "lenggen: environment setup failed." >&2; return 1 2>/dev/null || exit 1; }
# shellcheck disable=SC1091
source "$LENGGEN_VENV/bin/activate"
