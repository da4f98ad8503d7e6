#!/usr/bin/env bash
# fieldkit set-up for a Debian 12 machine, as root.
#   ./dev.sh run    install everything, then run the kit locally (Ctrl-C stops it)
#   ./dev.sh test   install everything, then run the quality gates and the full test suite
#   ./dev.sh lock   re-resolve requirements/dev.lock after a dependency in pyproject.toml changed
# Extra arguments after "test" go to pytest (e.g. ./dev.sh test --slow, ./dev.sh test -k bus);
# after "lock" to pip-compile (./dev.sh lock --upgrade moves every pin to its newest release).
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
  pcscd libccid libpcsclite-dev                     # card: PC/SC daemon, CCID driver, pyscard's build
  vsmartcard-vpcd python3-virtualsmartcard python3-pycryptodome  # card tests: a virtual reader and card
  chromium                                          # browser policy, wipe, kiosk and hub web tests (Playwright)
  nftables mmdebstrap mtools dosfstools fdisk e2fsprogs systemd  # images
  aide auditd                                       # integrity reports: the real AIDE, auditd, ausearch
  apparmor                                          # apparmor_parser: every rendered profile compiles
)
# Only for the slow image tests (./dev.sh test --slow): booting a built image in a VM.
APT_PACKAGES_IMAGE_BOOT=(qemu-system-x86 qemu-utils ovmf swtpm socat)  # socat: the field test's forwards

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
  # Every third-party package at the version and with the hash requirements/dev.lock pins
  # (fieldkit[dev]: both roles, the image build and the tools), build tools included, so the
  # editable install below needs nothing from an index. Quick when nothing changed.
  echo "==> installing the locked dependencies into .venv (requirements/dev.lock, hashes checked)"
  .venv/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.lock
  # Reinstall each time: it picks up new entry points.
  echo "==> installing fieldkit into .venv"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
}

# The lock for a Linux x86_64 machine with Python 3.11 (Debian 12). pip-tools runs in a venv
# of its own (.venv-lock), so what it resolves does not depend on what .venv holds.
lock() {
  if [[ ! -x .venv-lock/bin/pip-compile ]]; then
    python3 -m venv .venv-lock
    .venv-lock/bin/pip install -q --disable-pip-version-check pip-tools
  fi
  # dev.lock: the development machine (.venv). tablet.lock, hub.lock: the images' wheelhouse
  # (fieldkit.provision.image builds it from these, hashes checked), held to dev.lock's
  # versions: an image runs what the tests ran.
  local name
  for name in dev tablet hub; do
    echo "==> resolving fieldkit[$name] into requirements/$name.lock"
    CUSTOM_COMPILE_COMMAND="./dev.sh lock" .venv-lock/bin/pip-compile --quiet --extra "$name" --allow-unsafe \
      --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
      $([[ $name == dev ]] && echo --all-build-deps || echo --constraint requirements/dev.lock) \
      --output-file "requirements/$name.lock" "$@" pyproject.toml
    # fieldkit itself is installed editable (need_venv) or built from the tree, never from the
    # lock: drop its entry (pip-compile lists the project as a path it cannot hash).
    sed -i -e '/^# WARNING: pip install will require the following package to be hashed/,/^fieldkit @ /d' \
      -e '/^    # via file:/d' "requirements/$name.lock"
    if grep -q '^fieldkit @' "requirements/$name.lock"; then
      echo "dev.sh lock: could not drop fieldkit's own entry from requirements/$name.lock" >&2
      exit 1
    fi
  done
}

cmd=${1:-}
shift || true
case "$cmd" in
  run)
    need_apt
    need_venv
    fk=.venv/bin/fieldkit
    # A development kit PKI: CA, hub certificates, the public sealing keys of two
    # municipalities, and the tablet enrolled with keys it makes itself, signed by the local
    # kit CA (made once; delete var/pki, var/municipality and var/tablet to start over). A
    # fielded tablet enrols over EST with a one-time code instead (docs/operations.md).
    # var/municipality/ stands in for the municipalities' own machines: each makes its key
    # pair there (private key encrypted with the passphrase in var/municipality/passphrase)
    # and the kit imports only the public key, pinned by its fingerprint. It is outside the
    # hub's folders (etc, var/pki, var/hub): the hub refuses to start on a private sealing key.
    if [[ -d var/pki/receivers ]] && compgen -G 'var/pki/receivers/*/private.key' >/dev/null; then
      # A kit made before issue 17: its municipality keys were made in the hub's PKI folder.
      for old in var/pki/receivers/*/private.key; do
        code=$(basename "$(dirname "$old")")
        mkdir -p "var/municipality/$code"
        mv "$old" "var/municipality/$code/private.key"
        echo "==> moved $old to var/municipality/$code/ (the hub may not hold it)"
      done
    fi
    if [[ ! -d var/pki ]]; then
      $fk pki --dir var/pki init --dns localhost
      mkdir -p var/municipality
      (umask 077; printf 'demo municipality passphrase 2026\n' > var/municipality/passphrase)
      for code in 202011 202029; do
        fingerprint=$($fk packet keygen --out "var/municipality/$code" \
          --passphrase-file var/municipality/passphrase | sed -n 's/^fingerprint[^:]*: //p')
        $fk pki --dir var/pki receiver import "$code" "var/municipality/$code/sealing-public.pem" \
          --fingerprint "$fingerprint"
      done
      $fk --config etc/dev-tablet.toml enrol --local-pki var/pki --replace
      mkdir -p var/hub
      FIELDKIT_ADMIN_PASSWORD=demo-admin-2026 $fk --config etc/dev-hub.toml hub create-admin admin
    elif [[ ! -f var/tablet/enrolment/hub-downlink.pem ]]; then
      # A kit made before the hub signed what it sends down: give the hub its downlink key
      # and enrol the tablet again so that it pins it (it refuses unsigned acks and rosters).
      $fk pki --dir var/pki downlink-key
      $fk pki --dir var/pki revoke dev-tablet-01 || true
      $fk --config etc/dev-tablet.toml enrol --local-pki var/pki --replace
    fi
    if [[ ! -f var/pki/hub/evidence-signing.crt ]]; then
      # A kit made before the kit CA certified the deletion-evidence key.
      $fk pki --dir var/pki evidence-signer
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
  lock)
    need_apt
    lock "$@"
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
    echo "usage: ./dev.sh run | ./dev.sh test [pytest args] [--slow] | ./dev.sh lock [--upgrade]" >&2
    exit 2
    ;;
esac
