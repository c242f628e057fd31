"""Russian and English for the panel: a small gettext-style catalogue (like wizard/i18n.py).

Message ids are the English texts; ``RU`` maps them to Russian. The language is the
administrator's choice (stored on its account, switched in the page header), Russian
by default and on the login page until one is chosen. A test checks that every
``_("...")`` in the panel's templates and areas has a Russian entry. Error messages
raised by the service layer are shown as they are (English), like in the CLI.
"""
from __future__ import annotations

from flask import g, request, session

from .catalogue_ru import RU

LANGUAGES = ("ru", "en")
DEFAULT = "ru"


def current_language() -> str:
    lang = getattr(g, "lang", None)
    return lang if lang in LANGUAGES else DEFAULT


# English labels of identifiers shown as they are stored (roles, states, setting keys)
EN = {
    "superadmin": "superadmin", "domain_admin": "domain administrator", "readonly": "read-only",
    "in_service": "in service", "out_of_service": "out of service", "not_deployed": "not deployed",
    "panel.session_timeout_minutes": "Idle session timeout, minutes",
    "panel.lockout_user_failures": "Failed logins of one user before a lockout",
    "panel.lockout_address_failures": "Failed logins from one address before a lockout",
    "panel.lockout_minutes": "Lockout, minutes",
}


def gettext(msgid: str, **values) -> str:
    text = RU.get(msgid, msgid) if current_language() == "ru" else EN.get(msgid, msgid)
    return text.format(**values) if values else text


def install(app) -> None:
    @app.before_request
    def pick_language():
        admin = g.get("admin")
        chosen = request.args.get("lang")
        if chosen in LANGUAGES and admin is None:
            session["lang"] = chosen
        g.lang = admin.language if admin is not None else session.get("lang", DEFAULT)

    app.jinja_env.globals["_"] = gettext
    app.jinja_env.globals["current_language"] = current_language
