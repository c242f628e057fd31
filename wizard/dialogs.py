"""Interactive rupost-wizard: the screens of wizard.flow shown with the `dialog` program (pythondialog)."""
from __future__ import annotations

import locale
import os
import shutil
import sys
import textwrap

from rupost import config as node_config
from rupost.paths import Layout

from .cli import step_line
from .flow import EXIT_ABORTED, EXIT_OK, Field, MailHostChoice, Wizard
from .i18n import Catalogue, pick_language

WIDTH = 76
LABEL_WIDTH = 28


class DialogUI:
    def __init__(self, t: Catalogue):
        from dialog import Dialog

        self.t = t
        # arguments through a temporary file (dialog --file), never on dialog's command line:
        # the database password's field is in them, and /proc/PID/cmdline is world-readable
        self.d = Dialog(dialog="dialog", autowidgetsize=False, pass_args_via_file=True)
        self.d.set_background_title(t("backtitle"))

    def _width(self) -> int:
        return max(40, min(WIDTH, shutil.get_terminal_size((80, 24)).columns - 4))

    def _height(self, text: str, width: int, extra: int) -> int:
        """Rows for `text` wrapped in a box `width` wide, plus the frame, buttons and `extra` rows."""
        inner = width - 6
        lines = sum(len(textwrap.wrap(line, inner)) or 1 for line in text.split("\n"))
        # dialog moves a word longer than a line (a path) to a line of its own before breaking it
        lines += sum(1 for line in text.split("\n") for word in line.split()[1:] if len(word) > inner)
        return min(lines + 4 + extra, shutil.get_terminal_size((80, 24)).lines - 2)

    def yesno(self, title: str, text: str) -> bool:
        width = self._width()
        return self.d.yesno(text, height=self._height(text, width, 1), width=width, title=title,
                            yes_label=self.t("yes"),
                            no_label=self.t("no")) == self.d.OK

    def form(self, title: str, text: str, fields: list[Field]) -> list[str] | None:
        width = self._width()
        field_x = LABEL_WIDTH + 2
        field_len = width - field_x - 4
        elements = [(f.label, i + 1, 1, f.value, i + 1, field_x, field_len, 255, 0x1 if f.hidden else 0)
                    for i, f in enumerate(fields)]
        code, values = self.d.mixedform(text, elements, height=self._height(text, width, len(fields) + 2),
                                        width=width, form_height=len(fields),
                                        title=title, ok_label=self.t("next"), cancel_label=self.t("cancel"),
                                        insecure=True)
        return values if code == self.d.OK else None

    def info(self, title: str, text: str) -> None:
        width = self._width()
        self.d.infobox(text, height=self._height(text, width, -1), width=width, title=title)

    def message(self, title: str, text: str) -> None:
        width = self._width()
        self.d.msgbox(text, height=self._height(text, width, 1), width=width, title=title, ok_label=self.t("ok"))


def _utf8_locale() -> None:
    """dialog draws Cyrillic only in a UTF-8 locale: give it one when the session has none."""
    if "utf" not in (locale.getpreferredencoding(False) or "").lower().replace("-", ""):
        os.environ["LC_ALL"] = "C.UTF-8"


def start_values(cfg: node_config.NodeConfig, previous: node_config.NodeConfig, ctx) -> node_config.NodeConfig:
    """What the screens start from: the flags given on the command line, else the present
    configuration (a re-run after an upgrade), else the defaults."""
    from dataclasses import replace

    from click.core import ParameterSource

    db, before = cfg.database, previous.database
    flags = {"host": "db_host", "port": "db_port", "user": "db_user", "main": "db_name", "data": "data_db_name",
             "logs": "logs_db_name"}
    chosen = {key: getattr(db if ctx.get_parameter_source(flag) != ParameterSource.DEFAULT else before, key)
              for key, flag in flags.items()}
    members = db.members if ctx.get_parameter_source("db_members") != ParameterSource.DEFAULT else before.members
    return replace(cfg, database=node_config.DatabaseSettings(password=db.password or before.password or "",
                                                              members=members, **chosen))


def run_dialogs(root: str, lang: str | None, initial: node_config.NodeConfig,
                mail_host: MailHostChoice | None = None) -> int:
    if not shutil.which("dialog"):
        print("rupost-wizard: the `dialog` program is missing (apt-get install dialog), "
              "or run rupost-wizard --silent", file=sys.stderr)
        return 2
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("rupost-wizard: the dialog screens need a terminal; without one use rupost-wizard --silent",
              file=sys.stderr)
        return 2
    _utf8_locale()
    t = Catalogue(pick_language(lang))
    layout = Layout.at(root)
    wizard = Wizard(DialogUI(t), t, layout, initial, mail_host=mail_host)
    code = wizard.run()
    os.system("clear" if shutil.which("clear") else "true")
    if code == EXIT_OK:
        for step in wizard.steps:
            print(step_line(step))
        print(t("done.text", steps="").strip())
    elif code == EXIT_ABORTED:
        print(t("aborted"), file=sys.stderr)
    return code
