#!/usr/bin/env bash
# Copies the browser dependencies installed by `npm ci` into intake/static/vendor/ (and the
# back office's into backoffice/static/vendor/), so every page loads them from our own origin (no CDN, no third party).
set -euo pipefail
cd "$(dirname "$0")/.."
nm=node_modules
out=intake/static/vendor
rm -rf "$out.tmp" && mkdir -p "$out.tmp"

# face-api (bundles tfjs 4.22) and the three models we use; the wasm binaries come
# from @tensorflow/tfjs-backend-wasm, the version face-api bundles.
mkdir -p "$out.tmp/face-api/model" "$out.tmp/tfjs-wasm"
cp $nm/@vladmandic/face-api/dist/face-api.esm.js "$out.tmp/face-api/"
for m in ssd_mobilenetv1_model face_landmark_68_model face_recognition_model; do
  cp $nm/@vladmandic/face-api/model/$m-weights_manifest.json $nm/@vladmandic/face-api/model/$m.bin "$out.tmp/face-api/model/"
done
cp $nm/@tensorflow/tfjs-backend-wasm/dist/*.wasm "$out.tmp/tfjs-wasm/"

# libsodium: the ESM wrapper imports the bare name "libsodium"; point it at the file beside it.
mkdir -p "$out.tmp/libsodium"
cp $nm/libsodium/dist/modules-esm/libsodium.mjs "$out.tmp/libsodium/"
sed 's#from"libsodium"#from"./libsodium.mjs"#; s#from "libsodium"#from "./libsodium.mjs"#' \
  $nm/libsodium-wrappers/dist/modules-esm/libsodium-wrappers.mjs > "$out.tmp/libsodium/libsodium-wrappers.mjs"
grep -q '"./libsodium.mjs"' "$out.tmp/libsodium/libsodium-wrappers.mjs"

# hash-wasm (streamed SHA-256 / MD5 of large files).
mkdir -p "$out.tmp/hash-wasm"
cp $nm/hash-wasm/dist/index.esm.min.js "$out.tmp/hash-wasm/hash-wasm.mjs"

# qrcode-generator: the receipt's QR code, drawn in her browser (the server never renders a
# page holding her passphrase).
if [ -d $nm/qrcode-generator ]; then
  mkdir -p "$out.tmp/qrcode-generator"
  cp $nm/qrcode-generator/dist/qrcode.mjs $nm/qrcode-generator/dist/qrcode_UTF8.mjs "$out.tmp/qrcode-generator/"
else
  echo "build-vendor: qrcode-generator is not installed; the receipt offers no QR code" >&2
fi
rm -rf "$out" && mv "$out.tmp" "$out"

# Chart.js: the back office's charts, served by the back office only.
staff=backoffice/static/vendor
rm -rf "$staff" && mkdir -p "$staff/chart.js"
cp $nm/chart.js/dist/chart.umd.min.js "$staff/chart.js/"
# hash-wasm again for the login page's proof of work (backoffice/static/js/pow.js links to the intake's).
mkdir -p "$staff/hash-wasm"
cp $nm/hash-wasm/dist/index.esm.min.js "$staff/hash-wasm/hash-wasm.mjs"
