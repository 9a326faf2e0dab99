"""Intake pages: the form at / and the status page at /status (Japanese or English).

Pages set no cookie and keep nothing in the browser; every action goes through the JSON
API from the page's own scripts. The quick-exit target is a neutral site, reached only
when the button is pressed (nothing is loaded from it before).
"""
from flask import Blueprint, render_template

from intake import current_instance
from web import current_language

bp = Blueprint("main", __name__)

EXIT_URLS = {"ja": "https://tenki.jp/", "en": "https://www.bbc.com/weather"}


def _page(template: str, name: str, script: str):
    settings = current_instance().settings
    exit_url = settings.extra.get(f"exit_url_{current_language()}") or EXIT_URLS.get(current_language(), EXIT_URLS["en"])
    return render_template(template, page_name=name, page_script=script, exit_url=exit_url,
                           org_name=settings.org_name, org_phone=settings.org_phone, org_email=settings.org_email)


@bp.get("/")
def index():
    return _page("intake/index.html", "intake", "intake.js")


@bp.get("/status")
def status():
    return _page("intake/status.html", "status", "status.js")
