"""Adapters: template section in, native text out (table-driven, no daemons)."""
from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import RenderContext
from adapters.dovecot import format_scalar, libpq_quote, render_settings
from adapters.haproxy import render_haproxy_cfg
from adapters.memcached import memcached_args
from adapters.postfix import PostfixAdapter, render_main_cf, render_master_cf
from adapters.sogo import plist
from rupost.config import DatabaseSettings, NodeConfig
from rupost.paths import Layout


def ctx(tmp_path=Path("/srv/rp")) -> RenderContext:
    node = NodeConfig(database=DatabaseSettings(password="p@ss word'\\"))
    return RenderContext(Layout.at(tmp_path), node, node.database, tmp_path / "gen")


@pytest.mark.parametrize("main, line", [
    ({"smtpd_tls_auth_only": True}, "smtpd_tls_auth_only = yes"),
    ({"smtpd_relay_restrictions": ["permit_sasl_authenticated", "reject_unauth_destination"]},
     "smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination"),
    ({"message_size_limit": 1048576}, "message_size_limit = 1048576"),
    ({"mydestination": ""}, "mydestination = "),
])
def test_postfix_main_cf(main, line):
    assert line in render_main_cf(main).splitlines()


def test_postfix_main_cf_refuses_newlines():
    with pytest.raises(ValueError):
        render_main_cf({"myhostname": "a\nrelayhost = evil"})


def test_postfix_master_cf_quotes_values_with_spaces():
    text = render_master_cf([{"name": "127.0.0.1:2525", "type": "inet", "private": "n", "chroot": "n",
                              "command": "smtpd", "options": {"smtpd_client_restrictions": "permit_sasl_authenticated, reject",
                                                              "syslog_name": "x/y", "empty": ""}},
                             {"name": "off", "type": "unix", "command": "smtp", "enabled": False}])
    lines = text.splitlines()
    assert "127.0.0.1:2525 inet n - n - - smtpd" in lines
    assert "  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }" in lines
    assert "  -o syslog_name=x/y" in lines and "  -o empty=" in lines
    assert not any(line.startswith("off ") for line in lines)


def test_postfix_lookup_tables_carry_the_database_and_are_private():
    files = PostfixAdapter().render({"main": {}, "master": [], "lookups": {
        "domains": {"query": "SELECT 1 FROM lookup_domains\n   WHERE name = '%s'"}}}, ctx())
    table = next(f for f in files if f.path == "pgsql-domains.cf")
    assert table.mode == 0o640 and table.group == "postfix"
    assert "query = SELECT 1 FROM lookup_domains WHERE name = '%s'" in table.content
    assert "dbname = rupost_data" in table.content


def test_postfix_unknown_parameter_is_reported_with_path():
    problems = PostfixAdapter().check_model({"main": {"smtpd_tls_cert_fle": "x", "myhostname": "m"},
                                             "master": [], "lookups": {}})
    assert problems == ["components.postfix.main.smtpd_tls_cert_fle: unknown key (not a postfix parameter)"]


@pytest.mark.parametrize("value, out", [
    (True, "yes"), ("plain", "plain"), ("with space ", '"with space "'), ("a#b", '"a#b"'),
    ("</etc/x.pem", "</etc/x.pem"), ('quo"te', '"quo\\"te"'),
])
def test_dovecot_scalar_quoting(value, out):
    assert format_scalar(value) == out


def test_dovecot_sections_and_repeated_sections():
    lines = render_settings({"protocols": ["imap", "lmtp"], "service imap-login": {
        "inet_listener imap": {"port": 143, "haproxy": True}}, "passdb": [{"driver": "sql"}, {"driver": "static"}]})
    assert lines == ["protocols = imap lmtp", "service imap-login {", "  inet_listener imap {", "    port = 143",
                     "    haproxy = yes", "  }", "}", "passdb {", "  driver = sql", "}", "passdb {",
                     "  driver = static", "}"]


def test_libpq_connect_values_are_quoted():
    assert libpq_quote("p@ss word'\\") == "'p@ss word\\'\\\\'"


def test_haproxy_sends_proxy_v2_and_binds_public_ports():
    text = render_haproxy_cfg({"listeners": [{"name": "smtp", "bind": "*:25", "servers": ["127.0.0.1:10025"]},
                                             {"name": "x", "bind": "127.0.0.1:1", "servers": ["127.0.0.1:2"],
                                              "send_proxy": "none", "accept_proxy": True}]}, ctx())
    assert "    bind *:25" in text and "    server smtp1 127.0.0.1:10025 send-proxy-v2" in text
    assert "    bind 127.0.0.1:1 accept-proxy" in text and "    server x1 127.0.0.1:2\n" in text


def test_memcached_options():
    assert memcached_args({"listen": "127.0.0.1:11211", "memory_mb": 64}) == [
        "-m", "64", "-l", "127.0.0.1", "-p", "11211", "-U", "0", "-c", "1024", "-u", "memcache"]


def test_sogo_plist_escapes_and_encodes_cyrillic():
    text = plist({"SOGoPageTitle": 'Почта "RuPost"', "WOWorkersCount": 3, "SOGoVacationEnabled": False,
                  "SOGoUserSources": [{"type": "sql"}]})
    assert 'SOGoPageTitle = "\\U041f\\U043e\\U0447\\U0442\\U0430 \\"RuPost\\"";' in text
    assert "WOWorkersCount = 3;" in text and "SOGoVacationEnabled = NO;" in text


def test_sogo_database_password_is_percent_encoded():
    from adapters.sogo import _db_url

    assert _db_url(ctx(), "t") == "postgresql://rupost:p%40ss%20word%27%5C@127.0.0.1:5432/rupost_data/t"
