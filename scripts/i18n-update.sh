#!/usr/bin/env bash
# Re-extract translatable strings and merge them into each language's catalog.
# Then translate the new entries in translations/<lang>/LC_MESSAGES/messages.po.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pybabel extract -F babel.cfg -k _l -o translations/messages.pot \
  --ignore-dirs='.venv node_modules tests bench' .
.venv/bin/pybabel update -N -i translations/messages.pot -d translations
