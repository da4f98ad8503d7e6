#!/usr/bin/env bash
# fieldkit set-up for a Debian 12 machine, as root.
#   ./dev.sh run    install everything, then run the kit locally (Ctrl-C stops it)
#   ./dev.sh test   install everything, then run the quality gates and the full test suite
# Extra arguments after "test" go to pytest (e.g. ./dev.sh test --slow, ./dev.sh test -k bus).
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the kit and its tests use. Later capabilities add theirs here.
APT_PACKAGES=(
  python3 python3-venv python3-dev build-essential
  mosquitto mosquitto-clients                       # the local bus
  libzbar0                                          # capture: pyzbar's QR decoder
  cups cups-client cups-bsd cups-ipp-utils cups-filters dbus-daemon libcups2-dev  # printing
  poppler-utils fonts-ipaexfont-gothic              # PDFs with Japanese text, read back in tests
  clamav clamav-freshclam                           # antivirus
  postgresql iproute2                               # hub database tests; network-namespace tests
  cryptsetup-bin                                    # wipe: LUKS keyslot erase
  chromium chromium-driver                          # browser policy, wipe and hub web tests
  nftables mmdebstrap mtools dosfstools fdisk e2fsprogs systemd  # images
)
# Only for the slow image tests (./dev.sh test --slow): booting a built image in a VM.
APT_PACKAGES_IMAGE_BOOT=(qemu-system-x86 qemu-utils ovmf swtpm)

need_apt() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "==> installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
  fi
}

need_venv() {
  if [[ ! -x .venv/bin/python ]]; then
    echo "==> creating .venv"
    python3 -m venv .venv
  fi
  # Reinstall each time: it is quick when nothing changed, and picks up new entry points.
  echo "==> installing fieldkit into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
}

cmd=${1:-}
shift || true
case "$cmd" in
  run)
    need_apt
    need_venv
    fk=.venv/bin/fieldkit
    # A development kit PKI: CA, hub certificates, receiver keys for two municipalities, and
    # the tablet's enrolment bundle (made once; delete var/pki to start over).
    if [[ ! -d var/pki ]]; then
      $fk pki --dir var/pki init --dns localhost
      for code in 202011 202029; do $fk pki --dir var/pki receiver $code; done
      $fk pki --dir var/pki enrol dev-tablet-01
      mkdir -p var/hub
      FIELDKIT_ADMIN_PASSWORD=demo-admin-2026 $fk --config etc/dev-hub.toml hub create-admin admin
    fi
    # The development hub: its own broker and the antivirus definitions mirror, with the kit's
    # demo signature database freshly published so the tablet's session gate lets sessions start.
    $fk --config etc/dev-hub.toml av publish var/hub/av-mirror etc/demo-signatures.ndb
    # Ctrl-C, or a TERM to this script alone, stops both supervisors (each stops its services
    # and brokers); bash runs a trap while it waits, not while a foreground command runs.
    # If either supervisor ends, the other is stopped too.
    hub= tablet=
    trap 'kill -TERM $tablet $hub 2>/dev/null; wait $tablet $hub 2>/dev/null' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    $fk --config etc/dev-hub.toml up &
    hub=$!
    # The kit's temporary files go to its own folder, which the session wipe scans ([wipe]
    # temp_dirs), never to your /tmp.
    mkdir -p var/tmp
    TMPDIR="$PWD/var/tmp" $fk --config etc/dev-tablet.toml up "$@" &
    tablet=$!
    echo "==> kiosk: http://127.0.0.1:8080/  (operator demo-01, password demo-pass-2026)"
    echo "==> hub:   http://127.0.0.1:8090/  (admin, password demo-admin-2026)"
    wait -n $tablet $hub
    ;;
  test)
    pytest_args=()
    slow_packages=()
    for arg in "$@"; do
      if [[ $arg == --slow ]]; then
        pytest_args+=(-m "slow or not slow")
        slow_packages=("${APT_PACKAGES_IMAGE_BOOT[@]}")
      else
        pytest_args+=("$arg")
      fi
    done
    need_apt "${slow_packages[@]}"
    need_venv
    echo "==> ruff"
    .venv/bin/ruff check services tests bench
    .venv/bin/ruff format --check services tests bench
    echo "==> mypy --strict services/"
    .venv/bin/mypy --strict services
    echo "==> lint-imports (the import contracts in pyproject.toml)"
    .venv/bin/lint-imports --no-cache
    echo "==> pytest"
    exec .venv/bin/pytest "${pytest_args[@]}"
    ;;
  *)
    echo "usage: ./dev.sh run | ./dev.sh test [pytest args] [--slow]" >&2
    exit 2
    ;;
esac
