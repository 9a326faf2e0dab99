"""The public intake: pages and a JSON API that only ever see ciphertext.

Nothing here opens a sealed box or imports staff-side code that decrypts.
"""
from pathlib import Path

from store.instance import Instance
from web import make_app, route_log


def create_app(instance: Instance | None = None):
    instance = instance or Instance()
    app = make_app("intake", static_folder=Path(__file__).with_name("static"), wasm=True)
    app.config.update(
        SECRET_KEY=instance.settings.secret("session"),
        MAX_CONTENT_LENGTH=instance.settings.max_submission_bytes,
        SESSION_COOKIE_NAME="kesu_intake",
    )
    app.extensions["kesu"] = instance
    route_log(app, "kesu.intake")

    from intake import api, main
    app.register_blueprint(api.bp)
    app.register_blueprint(main.bp)
    return app


def current_instance() -> Instance:
    from flask import current_app
    return current_app.extensions["kesu"]
