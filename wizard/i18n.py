"""Strings of the rupost-wizard dialog screens, Russian (default) and English.

Every text the screens show is here, nowhere else. `pick_language` chooses:
the --lang option, else English when LC_ALL / LANG starts with "en", else Russian.
"""
from __future__ import annotations

import os

LANGUAGES = ("ru", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "ru": {
        "backtitle": "RuPost: настройка узла",
        "yes": "Да",
        "no": "Нет",
        "next": "Далее",
        "cancel": "Отмена",
        "ok": "OK",
        "start.title": "Настройка RuPost",
        "start.text": ("Мастер настроит этот узел RuPost: подключение к PostgreSQL, базы данных, "
                       "схему, встроенные шаблоны, сертификаты и регистрацию узла.\n\n"
                       "Повторный запуск сохраняет домены, почтовые ящики и настройки.\n\n"
                       "Продолжить?"),
        "aborted": "Настройка прервана, ничего не изменено.",
        "db.title": "Подключение к PostgreSQL",
        "db.text": ("Параметры подключения к СУБД. Далее: проверка подключения. Отказоустойчивая база: "
                    "участники Patroni через запятую (СЕРВЕР[:ПОРТ[:ПОРТ_API]]), тогда сервер и порт не нужны."),
        "db.host": "Сервер",
        "db.port": "Порт",
        "db.main": "База конфигурации",
        "db.data": "База данных пользователей",
        "db.logs": "База журналов",
        "db.user": "Пользователь",
        "db.password": "Пароль",
        "db.members": "Участники Patroni",
        "db.connecting": "Подключение к {host}:{port}...",
        "db.failed": "Ошибка подключения: {reason}\nИсправьте параметры и нажмите «Далее».",
        "db.create.title": "Локальный PostgreSQL",
        "db.create.text": ("Сервер PostgreSQL работает на этом узле, но нет:\n{missing}\n\n"
                           "Создать пользователя и базы данных с введёнными параметрами?"),
        "db.create.role": "пользователя {name}",
        "db.create.db": "базы {name}",
        "db.create.declined": "Пользователь и базы не созданы. Исправьте параметры или создайте их вручную.",
        "db.create.failed": "Не удалось создать: {reason}",
        "node.title": "Идентификация узла",
        "node.text": ("Имя узла, его полное доменное имя, имя почтового сервера (одно для всего кластера: "
                      "приветствие SMTP и EHLO, запись MX, автонастройка клиентов, сертификат) и адрес, "
                      "по которому узел доступен другим узлам."),
        "node.name": "Имя узла",
        "node.fqdn": "Полное имя (FQDN)",
        "node.mail_host": "Имя почтового сервера",
        "node.address": "Адрес",
        "confirm.title": "Подтверждение",
        "confirm.text": ("Будут применены настройки:\n\n"
                         "PostgreSQL: {user}@{where}\n"
                         "Базы: {main}, {data}, {logs}\n"
                         "Узел: {node_name} ({fqdn}, {address})\n"
                         "Почтовый сервер: {mail_host}\n"
                         "Файл настроек: {config}\n\n"
                         "Начать настройку?"),
        "run.title": "Автоматическая настройка",
        "run.working": "Выполняется настройка (схема баз, шаблоны, сертификаты, регистрация узла)...",
        "run.failed": "Настройка не выполнена: {reason}",
        "done.title": "Готово",
        "done.text": "Узел RuPost настроен. Следующий шаг: rupost deploy\n\n{steps}",
        "err.empty": "Поле «{field}» не заполнено.",
        "err.port": "Порт «{value}»: нужно число от 1 до 65535.",
        "err.ident": "«{field}» = «{value}»: только латинские буквы, цифры и _, не с цифры, не длиннее 63.",
        "err.distinct": "Три базы данных должны называться по-разному.",
        "err.member": "Участники Patroni: {reason}",
        "err.member.twice": "Участники Patroni: один и тот же участник указан дважды.",
        "confirm.members": "участники Patroni {members} (ведущий узел — тот, что принимает запись)",
        "err.host": "Сервер «{value}»: недопустимое имя или адрес.",
        "err.node": "«{field}» = «{value}»: недопустимое имя (буквы, цифры, точки, дефисы).",
        "err.address": "Адрес «{value}»: нужен IPv4/IPv6-адрес или имя узла.",
        "err.mail_host.invalid": "Имя почтового сервера «{value}»: недопустимое имя (например, mail.example.ru).",
        "err.mail_host.ip": "Имя почтового сервера «{value}» — это IP-адрес; нужно имя (например, mail.example.ru).",
        "err.mail_host.unqualified": ("Имя почтового сервера «{value}» не полное или указывает на сам узел "
                                      "(localhost): другие серверы и почтовые клиенты не найдут по нему этот "
                                      "узел. Введите полное имя, например mail.example.ru, или запустите мастер "
                                      "с {flag}."),
    },
    "en": {
        "backtitle": "RuPost: node configuration",
        "yes": "Yes",
        "no": "No",
        "next": "Next",
        "cancel": "Cancel",
        "ok": "OK",
        "start.title": "RuPost configuration",
        "start.text": ("This wizard configures this RuPost node: PostgreSQL connection, databases, "
                       "schema, builtin templates, certificates and node registration.\n\n"
                       "Running it again keeps domains, mailboxes and settings.\n\n"
                       "Continue?"),
        "aborted": "Configuration aborted, nothing was changed.",
        "db.title": "PostgreSQL connection",
        "db.text": ("Database server connection. Next: the connection is checked. A highly available "
                    "database: its Patroni members, comma-separated (HOST[:PORT[:API_PORT]]); host and port "
                    "are then not used."),
        "db.host": "Host",
        "db.port": "Port",
        "db.main": "Configuration database",
        "db.data": "User data database",
        "db.logs": "Logs database",
        "db.user": "User",
        "db.password": "Password",
        "db.members": "Patroni members",
        "db.connecting": "Connecting to {host}:{port}...",
        "db.failed": "Connection failed: {reason}\nCorrect the values and press Next.",
        "db.create.title": "Local PostgreSQL",
        "db.create.text": ("The PostgreSQL server runs on this node, but these are missing:\n{missing}\n\n"
                           "Create the user and databases with the values entered?"),
        "db.create.role": "user {name}",
        "db.create.db": "database {name}",
        "db.create.declined": "The user and databases were not created. Correct the values or create them by hand.",
        "db.create.failed": "Could not create them: {reason}",
        "node.title": "Node identity",
        "node.text": ("Node name, its fully qualified name, the mail host name (one for the whole cluster: "
                      "SMTP banner and EHLO, MX record, client autoconfiguration, certificate) and the address "
                      "other nodes reach this node at."),
        "node.name": "Node name",
        "node.fqdn": "Fully qualified name",
        "node.mail_host": "Mail host name",
        "node.address": "Address",
        "confirm.title": "Confirmation",
        "confirm.text": ("These settings will be applied:\n\n"
                         "PostgreSQL: {user}@{where}\n"
                         "Databases: {main}, {data}, {logs}\n"
                         "Node: {node_name} ({fqdn}, {address})\n"
                         "Mail host: {mail_host}\n"
                         "Configuration file: {config}\n\n"
                         "Start the configuration?"),
        "run.title": "Auto-configuration",
        "run.working": "Configuring (database schema, templates, certificates, node registration)...",
        "run.failed": "Configuration failed: {reason}",
        "done.title": "Done",
        "done.text": "The RuPost node is configured. Next step: rupost deploy\n\n{steps}",
        "err.empty": "The field \"{field}\" is empty.",
        "err.port": "Port \"{value}\": expected a number from 1 to 65535.",
        "err.ident": "\"{field}\" = \"{value}\": use Latin letters, digits and _, not starting with a digit, "
                     "at most 63.",
        "err.distinct": "The three databases must have different names.",
        "err.member": "Patroni members: {reason}",
        "err.member.twice": "Patroni members: the same member is given twice.",
        "confirm.members": "the Patroni members {members} (the primary: the one that accepts writes)",
        "err.host": "Host \"{value}\": not a valid name or address.",
        "err.node": "\"{field}\" = \"{value}\": not a valid name (letters, digits, dots, hyphens).",
        "err.address": "Address \"{value}\": expected an IPv4/IPv6 address or a host name.",
        "err.mail_host.invalid": "Mail host name \"{value}\": not a valid host name (e.g. mail.example.org).",
        "err.mail_host.ip": "Mail host name \"{value}\" is an IP address: it must be a name (e.g. mail.example.org).",
        "err.mail_host.unqualified": ("Mail host name \"{value}\" is not fully qualified or is a loopback name: "
                                      "other servers and mail clients cannot find this node by it. Enter a name "
                                      "such as mail.example.org, or run the wizard with {flag}."),
    },
}


def pick_language(option: str | None = None, environ=None) -> str:
    if option:
        if option not in LANGUAGES:
            raise ValueError(f"unknown language {option!r} (known: {', '.join(LANGUAGES)})")
        return option
    env = os.environ if environ is None else environ
    for var in ("LC_ALL", "LANG"):
        value = env.get(var) or ""
        if value:
            return "en" if value.lower().startswith("en") else "ru"
    return "ru"


class Catalogue:
    def __init__(self, lang: str):
        self.lang = lang
        self.messages = MESSAGES[lang]

    def __call__(self, key: str, **values) -> str:
        return self.messages[key].format(**values) if values else self.messages[key]
