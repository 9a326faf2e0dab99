"""The intake JSON API (DESIGN.md §6.3): cookie-less, ciphertext only."""
from flask import Blueprint, jsonify

from . import current_instance

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.get("/key")
def key():
    key_id, public_key = current_instance().public_key()
    return jsonify(key_id=key_id, public_key=public_key)
