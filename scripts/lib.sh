# Shared by scripts/run and scripts/test: idempotent set-up steps for a fresh machine.

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    log "cannot install $* (no apt-get); install it yourself"; return 1
  fi
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ensure_venv EXTRAS: a virtualenv in .venv with the project installed (editable), every
# package at the version pinned in requirements/lock.txt (the same versions as production).
ensure_venv() {
  local extras=$1 stamp
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  stamp=".venv/.phonos-installed-$(cat pyproject.toml requirements/lock.txt | sha256sum | cut -c1-16)-${extras//[^a-z,]/}"
  if [ ! -f "$stamp" ]; then
    log "installing Phonos and its dependencies ($extras) into .venv"
    .venv/bin/python -m pip install -q --upgrade pip 2>/dev/null
    # The lock pins torch to the CPU wheel (2.13.0+cpu), never CUDA; it constrains, so only the
    # named extras are installed.
    .venv/bin/python -m pip install -q -c requirements/lock.txt -e ".[$extras]" 2>&1 \
      | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import django" && touch "$stamp"
  fi
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL"; apt_install postgresql
  fi
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  # A fresh Debian cluster asks for passwords over TCP: give the tests' role one.
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  command -v redis-server >/dev/null 2>&1 || { log "installing Redis"; apt_install redis-server; }
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
}

# ensure_node_assets: the dashboard's npm packages (Mol*, Chart.js, htmx) from package-lock.json.
ensure_node_assets() {
  [ -d node_modules/molstar/build/viewer ] && [ -d node_modules/chart.js/dist ] \
    && [ -d node_modules/htmx.org/dist ] && return 0
  command -v npm >/dev/null 2>&1 || { log "installing Node.js and npm"; apt_install nodejs npm; }
  log "installing the dashboard's front-end packages (npm ci)"
  npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
}

# ensure_chromium: Debian's Chromium for the dashboard's browser tests (never `playwright install`).
ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  log "installing Chromium for the browser tests"; apt_install chromium
}

# ensure_nginx: Debian's nginx, the reverse proxy of scripts/serve (run as the invoking user,
# never as a system service).
ensure_nginx() {
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] && return 0
  log "installing nginx"; apt_install nginx
}
